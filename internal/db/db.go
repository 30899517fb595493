// Package db is the api's access to the WAYWO SQLite file: the backend's
// waywo_projects table, of which we write description_embedding and nothing
// else, and our own table embed_sync_state recording what we last stored
// for each project (or why we could not).
//
// SQLite allows one writer at a time and the WAYWO backend writes the same
// file, so: WAL, a busy timeout, one writer connection that takes the write
// lock when its transaction begins, short transactions, and a retry while
// the file stays locked longer than the busy timeout.
package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	"go.uber.org/zap"
)

// BusyTimeout is how long one statement waits for a lock held by another
// connection (the backend's, say) before SQLite gives up with SQLITE_BUSY.
const BusyTimeout = 5 * time.Second

// Store is the open file: one writer connection and a pool of readers.
// The file at the path is checked before each use: one replaced under it
// (a backup restored, `mv new.db waywo.db`) is opened in its place, since
// the old one, deleted, would be read and written unseen by anyone.
type Store struct {
	path string
	log  *zap.Logger

	mu       sync.Mutex
	p        *pools
	closed   bool
	replaced chan struct{} // closed, and made anew, when another file is set up at the path
}

// pools are the connections to one file, known by its device and inode.
type pools struct {
	w, r     *sqlx.DB
	dev, ino uint64
}

// close closes both pools and says whether a connection was open until
// then: only then can SQLite have left the file's -wal behind (no
// connection is kept between uses).
func (p *pools) close() (hadOpen bool) {
	hadOpen = p.w.Stats().OpenConnections+p.r.Stats().OpenConnections > 0
	_ = p.r.Close()
	_ = p.w.Close()
	return hadOpen
}

// Open opens (or creates) the WAYWO file at path, creating waywo_projects
// when it is missing and our state table always. It checks that an existing
// waywo_projects has the columns the sync needs and never alters it.
func Open(ctx context.Context, path string, log *zap.Logger) (*Store, error) {
	log = log.Named("db")
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("WAYWO_DB %q: %w", path, err)
	}
	_, statErr := os.Stat(abs)
	created := errors.Is(statErr, os.ErrNotExist)
	if created {
		if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
			return nil, fmt.Errorf("create directory for WAYWO_DB: %w", err)
		}
	}
	s := &Store{path: abs, log: log, replaced: make(chan struct{})}
	if s.p, err = s.open(ctx); err != nil {
		return nil, err
	}
	if created {
		log.Info("created the WAYWO database with an empty waywo_projects", zap.String("path", abs))
	}
	return s, nil
}

// open opens and prepares the file at s.path.
func (s *Store) open(ctx context.Context) (*pools, error) {
	uri := (&url.URL{Scheme: "file", Path: filepath.ToSlash(s.path)}).String()
	// In WAL, synchronous=NORMAL syncs at checkpoints: a power cut can lose
	// the last writes, which the reconcile finds stale and writes again.
	params := fmt.Sprintf("_busy_timeout=%d&_synchronous=NORMAL", BusyTimeout.Milliseconds())
	w, err := sqlx.Open("sqlite3", uri+"?"+params+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", s.path, err)
	}
	// No connection is kept between uses. SQLite keeps a file's -wal while
	// any connection is open, and one left behind by a file that was
	// replaced (a restore) is replayed into the new file by the next
	// process that opens it. Closed, the last connection checkpoints and
	// removes it. Opening costs well under a millisecond; a sync batch
	// costs a model call.
	w.SetMaxOpenConns(1) // SQLite has one writer; queue here, not in SQLite
	w.SetMaxIdleConns(0)
	if err := s.prepare(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("WAYWO_DB %s: %w", s.path, err)
	}
	r, err := sqlx.Open("sqlite3", uri+"?"+params+"&_query_only=true")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", s.path, err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(0)
	p := &pools{w: w, r: r}
	fi, err := os.Stat(s.path)
	if err != nil {
		p.close()
		return nil, fmt.Errorf("WAYWO_DB %s: %w", s.path, err)
	}
	p.dev, p.ino = fileID(fi)
	return p, nil
}

// pools returns the connections to the file now at the path, reopening
// when it is another file than the one open, and failing while there is
// none (deleted, or between a delete and its replacement).
func (s *Store) pools(ctx context.Context) (*pools, error) {
	fi, statErr := os.Stat(s.path)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("database closed")
	}
	if errors.Is(statErr, os.ErrNotExist) {
		if s.p != nil {
			s.log.Warn("WAYWO_DB was deleted; closed it, and the sync waits for a file at its path", zap.String("path", s.path))
			if s.p.close() {
				s.setAsideWAL(time.Time{})
			}
			s.p = nil
		}
		return nil, fmt.Errorf("WAYWO_DB %s no longer exists (deleted, or being replaced); the sync waits for it", s.path)
	}
	if statErr != nil {
		if s.p == nil {
			return nil, fmt.Errorf("WAYWO_DB %s: %w", s.path, statErr)
		}
		return s.p, nil // cannot tell; keep the file open
	}
	if dev, ino := fileID(fi); s.p != nil && dev == s.p.dev && ino == s.p.ino {
		return s.p, s.setUp(ctx, s.p)
	}
	var old [2]uint64
	if s.p != nil {
		old = [2]uint64{s.p.dev, s.p.ino}
		if s.p.close() {
			s.setAsideWAL(changeTime(fi))
		}
		s.p = nil
	}
	p, err := s.open(ctx)
	if err != nil {
		return nil, fmt.Errorf("WAYWO_DB %s was replaced and the new file cannot be opened: %w", s.path, err)
	}
	s.p = p
	s.log.Warn("WAYWO_DB was replaced by another file (a restore, a move); reopened it and set it up as at start",
		zap.String("path", s.path), zap.Uint64("old_inode", old[1]), zap.Uint64("new_inode", p.ino),
		zap.Uint64("old_device", old[0]), zap.Uint64("new_device", p.dev))
	s.announceReplaced()
	return p, nil
}

// setUp checks, at each use, that the open file still has our table: a
// file whose content was replaced in place (cp of a backup over it, a new
// file given the deleted one's inode, a DROP TABLE) keeps its device and
// inode, and would fail every sync with "no such table". Such a file is set
// up as a file found at start. The check is one small query. s.mu is held.
func (s *Store) setUp(ctx context.Context, p *pools) error {
	var n int
	err := retryBusy(ctx, s.log, "check tables", func() error {
		return p.r.GetContext(ctx, &n, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('waywo_projects', 'embed_sync_state')")
	})
	if err != nil {
		return fmt.Errorf("WAYWO_DB %s: %w", s.path, err)
	}
	if n == 2 {
		return nil
	}
	s.log.Warn("WAYWO_DB lost our table (a backup restored over it, a new file in its place); setting it up as at start", zap.String("path", s.path))
	if err := s.prepare(ctx, p.w); err != nil {
		return fmt.Errorf("WAYWO_DB %s was replaced and cannot be set up: %w", s.path, err)
	}
	s.announceReplaced()
	return nil
}

// announceReplaced tells those waiting on Replaced. s.mu is held.
func (s *Store) announceReplaced() {
	close(s.replaced)
	s.replaced = make(chan struct{})
}

// Replaced is closed when another file is set up at the path (its rows are
// then to be checked, as at start); ask again after it fires.
func (s *Store) Replaced() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.replaced
}

// setAsideWAL moves the -wal and -shm files of a file that left the path
// out of the way of the one that comes: SQLite keeps them when the file
// it wrote was unlinked, and would replay the old file's pages into the
// new one. Those written since the new file arrived (another process
// writing to it) stay. Nothing is deleted: they are renamed *.stale-<time>.
func (s *Store) setAsideWAL(arrived time.Time) {
	stamp := time.Now().UTC().Format("20060102T150405")
	for _, suffix := range []string{"-wal", "-shm"} {
		fi, err := os.Stat(s.path + suffix)
		if err != nil || (!arrived.IsZero() && fi.ModTime().After(arrived)) {
			continue
		}
		to := s.path + suffix + ".stale-" + stamp
		if err := os.Rename(s.path+suffix, to); err != nil {
			s.log.Error("could not set aside the replaced file's "+suffix, zap.String("path", s.path+suffix), zap.Error(err))
			continue
		}
		s.log.Warn("set aside the replaced file's "+suffix+" so that it is not applied to the new one", zap.String("to", to))
	}
}

// changeTime is when a file's inode last changed: for one moved into
// place, when it arrived.
func changeTime(fi os.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
	}
	return time.Time{}
}

// fileID is a file's device and inode: what tells a replaced file.
func fileID(fi os.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), st.Ino
	}
	return 0, 0
}

// Path is the file's absolute path.
func (s *Store) Path() string { return s.path }

// Close closes both pools.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.p == nil {
		return nil
	}
	s.p.close()
	return nil
}

func (s *Store) prepare(ctx context.Context, w *sqlx.DB) error {
	var mode string
	if err := w.GetContext(ctx, &mode, "PRAGMA journal_mode=WAL"); err != nil {
		return fmt.Errorf("set WAL: %w", err)
	}
	if mode != "wal" {
		// Another connection may hold the file in a mode that cannot be
		// changed now; SQLite still works, with more waiting.
		s.log.Warn("the database is not in WAL mode; readers and the writer will wait for each other", zap.String("journal_mode", mode))
	}
	return s.writeTo(ctx, w, "create tables", func(tx *sqlx.Tx) error {
		var n int
		if err := tx.GetContext(ctx, &n, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='waywo_projects'"); err != nil {
			return err
		}
		if n == 0 {
			if _, err := tx.ExecContext(ctx, BackendSchema); err != nil {
				return fmt.Errorf("create waywo_projects: %w", err)
			}
		} else if err := checkColumns(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, stateSchema); err != nil {
			return err
		}
		return addColumns(ctx, tx)
	})
}

// Project is one waywo_projects row as the sync sees it, with our state.
// Every column is nullable here: the file is the backend's and a row may
// break its own schema, which the sync reports rather than trips over.
type Project struct {
	ID          int64          `db:"id"`
	Title       sql.NullString `db:"title"`
	Description sql.NullString `db:"description"`
	Hashtags    sql.NullString `db:"hashtags"`
	Valid       sql.NullBool   `db:"is_valid_project"`
	// BlobBytes is the length of description_embedding: NULL when there is
	// none, -1 when it holds something other than a blob.
	BlobBytes sql.NullInt64 `db:"blob_bytes"`

	Hash       sql.NullString `db:"content_hash"`
	Model      sql.NullString `db:"model"`
	Dims       sql.NullInt64  `db:"dims"`
	Digest     sql.NullString `db:"model_digest"`
	FailedHash sql.NullString `db:"failed_hash"`
	LastError  sql.NullString `db:"last_error"`
}

const selectProjects = `
SELECT p.id, p.title, p.description, p.hashtags, p.is_valid_project,
	CASE typeof(p.description_embedding) WHEN 'null' THEN NULL WHEN 'blob' THEN length(p.description_embedding) ELSE -1 END AS blob_bytes,
	s.content_hash, s.model, s.dims, s.model_digest, s.failed_hash, s.last_error
FROM waywo_projects p LEFT JOIN embed_sync_state s ON s.project_id = p.id`

// Projects reads the rows with the given ids; ids with no row are absent.
func (s *Store) Projects(ctx context.Context, ids []int64) ([]Project, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	q, args, err := sqlx.In(selectProjects+" WHERE p.id IN (?)", ids)
	if err != nil {
		return nil, err
	}
	p, err := s.pools(ctx)
	if err != nil {
		return nil, err
	}
	var out []Project
	err = retryBusy(ctx, s.log, "read projects", func() error {
		out = out[:0]
		return p.r.SelectContext(ctx, &out, q, args...)
	})
	if err != nil {
		return nil, fmt.Errorf("read projects: %w", err)
	}
	return out, nil
}

// EachProject calls fn for every row in id order, reading as it goes.
func (s *Store) EachProject(ctx context.Context, fn func(Project) error) error {
	p, err := s.pools(ctx)
	if err != nil {
		return err
	}
	rows, err := p.r.QueryxContext(ctx, selectProjects+" ORDER BY p.id")
	if err != nil {
		return fmt.Errorf("scan projects: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var p Project
		if err := rows.StructScan(&p); err != nil {
			return fmt.Errorf("scan projects: %w", err)
		}
		if err := fn(p); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("scan projects: %w", err)
	}
	return nil
}
