// Writing: one writer connection, short transactions, retries while locked.

package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/mattn/go-sqlite3"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/backoff"
)

// Embedding is a vector to store for a project: the columns of the row
// its text was built from, as read, and the hash of that text.
type Embedding struct {
	ID     int64
	Source Project // the row as read when its text was built
	Blob   []byte
	Hash   string
	// Digest and OllamaVersion fingerprint the model that computed Blob.
	Digest        string
	OllamaVersion string
}

// Saved says what SaveEmbeddings did not write: Missing rows no longer
// exist; Superseded rows changed since their text was read (a newer text's
// sync, or the reconcile, takes over).
type Saved struct {
	Missing, Superseded []int64
}

// SaveEmbeddings writes each blob into description_embedding and records
// it, in one short transaction, where the row still holds the title,
// description and hashtags the vector was computed from: a sync of an
// older text that finishes after a sync of the newer one (two events, two
// workers of different speed) stores nothing.
func (s *Store) SaveEmbeddings(ctx context.Context, es []Embedding, model string, dims int, at time.Time) (saved Saved, err error) {
	stamp := at.UTC().Format(time.RFC3339Nano)
	err = s.write(ctx, "save embeddings", func(tx *sqlx.Tx) error {
		saved = Saved{}
		for _, e := range es {
			res, err := tx.ExecContext(ctx, `UPDATE waywo_projects SET description_embedding = ?
WHERE id = ? AND title IS ? AND description IS ? AND hashtags IS ?`,
				e.Blob, e.ID, e.Source.Title, e.Source.Description, e.Source.Hashtags)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				var exists int
				if err := tx.GetContext(ctx, &exists, "SELECT count(*) FROM waywo_projects WHERE id = ?", e.ID); err != nil {
					return err
				}
				if exists == 0 {
					saved.Missing = append(saved.Missing, e.ID)
				} else {
					saved.Superseded = append(saved.Superseded, e.ID)
				}
				continue
			}
			if _, err := tx.ExecContext(ctx, `
INSERT INTO embed_sync_state (project_id, content_hash, model, dims, embedded_at, model_digest, ollama_version, failed_hash, last_error, failed_at)
VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL)
ON CONFLICT (project_id) DO UPDATE SET content_hash = excluded.content_hash, model = excluded.model,
	dims = excluded.dims, embedded_at = excluded.embedded_at, model_digest = excluded.model_digest,
	ollama_version = excluded.ollama_version, failed_hash = NULL, last_error = NULL, failed_at = NULL`,
				e.ID, e.Hash, model, dims, stamp, nullIfEmpty(e.Digest), nullIfEmpty(e.OllamaVersion)); err != nil {
				return err
			}
		}
		return nil
	})
	return saved, err
}

func nullIfEmpty(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// Failure is why a project could not be embedded. Hash is set when the
// failure is for good for that content (a malformed row, a refused text):
// the reconcile then leaves the row alone until its content changes.
type Failure struct {
	ID     int64
	Hash   string // empty: worth retrying
	Reason string
}

// SaveFailures records failures of projects that still exist. known are
// those whose failure for good (Hash) was on record already: two syncs of
// one project that ran at once (two events, say) found the same failure,
// and only the first to record it should report it. The writer connection
// makes the two take turns here.
func (s *Store) SaveFailures(ctx context.Context, fs []Failure, at time.Time) (known []int64, err error) {
	stamp := at.UTC().Format(time.RFC3339Nano)
	err = s.write(ctx, "save failures", func(tx *sqlx.Tx) error {
		known = known[:0]
		for _, f := range fs {
			hash := sql.NullString{String: f.Hash, Valid: f.Hash != ""}
			if hash.Valid {
				var had sql.NullString
				err := tx.GetContext(ctx, &had, "SELECT failed_hash FROM embed_sync_state WHERE project_id = ?", f.ID)
				if err != nil && !errors.Is(err, sql.ErrNoRows) {
					return err
				}
				if had == hash {
					known = append(known, f.ID)
				}
			}
			if _, err := tx.ExecContext(ctx, `
INSERT INTO embed_sync_state (project_id, failed_hash, last_error, failed_at)
SELECT id, ?, ?, ? FROM waywo_projects WHERE id = ?
ON CONFLICT (project_id) DO UPDATE SET failed_hash = excluded.failed_hash,
	last_error = excluded.last_error, failed_at = excluded.failed_at`,
				hash, f.Reason, stamp, f.ID); err != nil {
				return err
			}
		}
		return nil
	})
	return known, err
}

// ForgetDeleted drops our state of projects the backend has deleted.
func (s *Store) ForgetDeleted(ctx context.Context) (int64, error) {
	var n int64
	err := s.write(ctx, "forget deleted projects", func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM embed_sync_state WHERE project_id NOT IN (SELECT id FROM waywo_projects)")
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return n, err
}

// write runs fn in one immediate transaction on the writer connection,
// again while the file stays locked.
func (s *Store) write(ctx context.Context, what string, fn func(*sqlx.Tx) error) error {
	p, err := s.pools(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return s.writeTo(ctx, p.w, what, fn)
}

// writeTo is write on the writer connection w.
func (s *Store) writeTo(ctx context.Context, w *sqlx.DB, what string, fn func(*sqlx.Tx) error) error {
	err := retryBusy(ctx, s.log, what, func() error {
		tx, err := w.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		if err := fn(tx); err != nil {
			_ = tx.Rollback()
			return err
		}
		return tx.Commit()
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// isBusy says whether err is SQLite's "the file is locked".
func isBusy(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && (se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked)
}

// lockedDelay paces the tries of a statement while the file stays locked:
// 50 ms, doubling, at most 1 s. Each try already waited BusyTimeout inside
// SQLite.
var lockedDelay = backoff.Policy{First: 50 * time.Millisecond, Max: time.Second}

// retryBusy runs fn until it succeeds, fails otherwise than busy, or ctx
// ends.
func retryBusy(ctx context.Context, log *zap.Logger, what string, fn func() error) error {
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || !isBusy(err) {
			return err
		}
		wait := lockedDelay.Delay(attempt)
		log.Warn("database locked; retrying", zap.String("op", what), zap.Int("attempt", attempt), zap.Duration("wait", wait), zap.Error(err))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up: %v)", err, context.Cause(ctx))
		case <-t.C:
		}
	}
}
