package db

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)))
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// source is a row as read, for an Embedding's Source.
func source(title, description, hashtags string) Project {
	ns := func(v string) sql.NullString { return sql.NullString{String: v, Valid: true} }
	return Project{Title: ns(title), Description: ns(description), Hashtags: ns(hashtags)}
}

// A vector is stored only over the text it was computed from: a row that
// changed since is superseded, one that is gone is missing; neither is
// written.
func TestSaveEmbeddingsOnlyOverTheirText(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "waywo.db"))
	ctx := context.Background()
	for _, id := range []int{1, 2} {
		_, err := s.p.w.Exec(InsertProject, id, "t", "d", "[]")
		require.NoError(t, err)
	}
	_, err := s.p.w.Exec("UPDATE waywo_projects SET hashtags = '[\"go\"]' WHERE id = 2")
	require.NoError(t, err)
	saved, err := s.SaveEmbeddings(ctx, []Embedding{
		{ID: 1, Source: source("t", "d", "[]"), Blob: []byte{1, 0, 0, 0}, Hash: "h1"},
		{ID: 2, Source: source("t", "d", "[]"), Blob: []byte{2, 0, 0, 0}, Hash: "h2"},
		{ID: 3, Source: source("t", "d", "[]"), Blob: []byte{3, 0, 0, 0}, Hash: "h3"},
	}, "m", 1, time.Now())
	require.NoError(t, err)
	require.Equal(t, Saved{Missing: []int64{3}, Superseded: []int64{2}}, saved)
	ps, err := s.Projects(ctx, []int64{1, 2})
	require.NoError(t, err)
	require.Equal(t, "h1", ps[0].Hash.String)
	require.False(t, ps[1].BlobBytes.Valid, "the changed row got no vector")
	require.False(t, ps[1].Hash.Valid, "nor a state")
}

// With no file, Open creates it with the backend's waywo_projects (and
// our table) in WAL mode, creating the directory too.
func TestOpenCreatesTheBackendsTable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "waywo.db")
	s := open(t, path)
	var mode string
	require.NoError(t, s.p.w.Get(&mode, "PRAGMA journal_mode"))
	require.Equal(t, "wal", mode)
	var sync int
	require.NoError(t, s.p.w.Get(&sync, "PRAGMA synchronous"))
	require.Equal(t, 1, sync, "NORMAL, on every connection")
	var cols []string
	require.NoError(t, s.p.r.Select(&cols, "SELECT name FROM pragma_table_info('waywo_projects')"))
	require.Contains(t, cols, "description_embedding")
	require.Contains(t, cols, "short_description")
	require.Contains(t, cols, "umap_x")
	require.Contains(t, cols, "created_at")
	var n int
	require.NoError(t, s.p.r.Get(&n, "SELECT count(*) FROM sqlite_master WHERE name = 'embed_sync_state'"))
	require.Equal(t, 1, n)
	// Opening again changes nothing.
	s.Close()
	open(t, path)
}

// An existing table is checked, never altered; one without the columns
// the sync needs is refused with their names.
func TestOpenChecksAnExistingTable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "waywo.db")
	raw, err := sql.Open("sqlite3", path)
	require.NoError(t, err)
	defer raw.Close()
	_, err = raw.Exec("CREATE TABLE waywo_projects (id INTEGER PRIMARY KEY, title TEXT, description TEXT)")
	require.NoError(t, err)
	_, err = Open(context.Background(), path, zap.NewNop())
	require.ErrorContains(t, err, "lacks column(s) hashtags, description_embedding, is_valid_project")
	var ddl string
	require.NoError(t, raw.QueryRow("SELECT sql FROM sqlite_master WHERE name = 'waywo_projects'").Scan(&ddl))
	require.Equal(t, "CREATE TABLE waywo_projects (id INTEGER PRIMARY KEY, title TEXT, description TEXT)", ddl)
}

// A write waits out another process's write lock held longer than the
// busy timeout, then lands; it gives up only when its context ends.
func TestWriteRetriesWhileLocked(t *testing.T) {
	if testing.Short() {
		t.Skip("holds a lock for longer than the busy timeout")
	}
	path := filepath.Join(t.TempDir(), "waywo.db")
	retrying := make(chan struct{})
	var once sync.Once
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel), zaptest.WrapOptions(zap.Hooks(func(e zapcore.Entry) error {
		if e.Message == "database locked; retrying" {
			once.Do(func() { close(retrying) })
		}
		return nil
	})))
	s, err := Open(context.Background(), path, log)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	_, err = s.p.w.Exec(InsertProject, 1, "t", "d", "[]")
	require.NoError(t, err)

	locker, err := sql.Open("sqlite3", "file:"+path+"?_txlock=exclusive")
	require.NoError(t, err)
	defer locker.Close()
	tx, err := locker.Begin()
	require.NoError(t, err)
	// The lock goes once the writer has waited out the busy timeout and
	// said it retries (or after a minute, and the test fails below).
	released := make(chan time.Time, 1)
	go func() {
		select {
		case <-retrying:
		case <-time.After(time.Minute):
		}
		released <- time.Now()
		_ = tx.Rollback()
	}()

	saved, err := s.SaveEmbeddings(context.Background(), []Embedding{{ID: 1, Source: source("t", "d", "[]"), Blob: []byte{1, 2, 3, 4}, Hash: "h"}}, "m", 1, time.Now())
	require.NoError(t, err)
	require.Empty(t, saved.Missing)
	require.Empty(t, saved.Superseded)
	done := time.Now()
	require.False(t, done.Before(<-released), "the write landed while the lock was held")
	select {
	case <-retrying:
	default:
		t.Fatal("the write never reported the lock and retried")
	}
	var n int
	require.NoError(t, s.p.r.Get(&n, "SELECT length(description_embedding) FROM waywo_projects WHERE id = 1"))
	require.Equal(t, 4, n)

	// Locked again, with a deadline: a clear error, not a hang.
	tx, err = locker.Begin()
	require.NoError(t, err)
	defer tx.Rollback()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = s.SaveEmbeddings(ctx, []Embedding{{ID: 1, Source: source("t", "d", "[]"), Blob: []byte{1, 2, 3, 4}, Hash: "h"}}, "m", 1, time.Now())
	require.Error(t, err)
}

// Failures are recorded only for projects that exist, and a success
// clears them; deleted projects' state is forgotten.
func TestFailuresAndForgetting(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "waywo.db"))
	ctx := context.Background()
	for _, id := range []int{1, 2} {
		_, err := s.p.w.Exec(InsertProject, id, "t", "d", "[]")
		require.NoError(t, err)
	}
	known, err := s.SaveFailures(ctx, []Failure{{ID: 1, Hash: "k", Reason: "bad"}, {ID: 99, Reason: "gone"}}, time.Now())
	require.NoError(t, err)
	require.Empty(t, known, "nothing was on record")
	// The same failure again, as a sync of project 1 that ran at once would
	// record it: known, so reported once.
	known, err = s.SaveFailures(ctx, []Failure{{ID: 1, Hash: "k", Reason: "bad"}}, time.Now())
	require.NoError(t, err)
	require.Equal(t, []int64{1}, known)
	ps, err := s.Projects(ctx, []int64{1, 2, 99})
	require.NoError(t, err)
	require.Len(t, ps, 2)
	require.Equal(t, "bad", ps[0].LastError.String)
	require.Equal(t, "k", ps[0].FailedHash.String)
	require.False(t, ps[1].LastError.Valid)

	_, err = s.SaveEmbeddings(ctx, []Embedding{{ID: 1, Source: source("t", "d", "[]"), Blob: []byte{0, 0, 0, 0}, Hash: "k2"}}, "m", 1, time.Now())
	require.NoError(t, err)
	ps, err = s.Projects(ctx, []int64{1})
	require.NoError(t, err)
	require.False(t, ps[0].LastError.Valid)
	require.Equal(t, int64(4), ps[0].BlobBytes.Int64)
	require.Equal(t, "k2", ps[0].Hash.String)

	_, err = s.p.w.Exec("DELETE FROM waywo_projects WHERE id = 1")
	require.NoError(t, err)
	n, err := s.ForgetDeleted(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
}

// A file whose embed_sync_state predates fingerprints gets the new columns
// at open, its rows kept (their digest NULL: the sync re-embeds them once).
func TestOpenAddsTheFingerprintColumns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "waywo.db")
	raw, err := sql.Open("sqlite3", path)
	require.NoError(t, err)
	_, err = raw.Exec(`CREATE TABLE embed_sync_state (project_id INTEGER PRIMARY KEY, content_hash TEXT, model TEXT, dims INTEGER,
		embedded_at TEXT, failed_hash TEXT, last_error TEXT, failed_at TEXT);
		INSERT INTO embed_sync_state (project_id, content_hash, model, dims) VALUES (7, 'h', 'm', 4)`)
	require.NoError(t, err)
	require.NoError(t, raw.Close())

	s := open(t, path)
	var cols []string
	require.NoError(t, s.p.r.Select(&cols, "SELECT name FROM pragma_table_info('embed_sync_state')"))
	require.Contains(t, cols, "model_digest")
	require.Contains(t, cols, "ollama_version")
	var digest sql.NullString
	require.NoError(t, s.p.r.Get(&digest, "SELECT model_digest FROM embed_sync_state WHERE project_id = 7"))
	require.False(t, digest.Valid)
	require.NoError(t, s.Close())
	open(t, path) // and a second open adds nothing
}

// A file replaced under the open store (a restore: another file moved to
// its path) is opened in its place and said so; while the path has no
// file, reads fail naming it rather than read the deleted one.
func TestReplacedFileIsReopened(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "waywo.db")
	core, logs := observer.New(zap.InfoLevel)
	s, err := Open(context.Background(), path, zap.New(core))
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	_, err = s.p.w.Exec(InsertProject, 1, "old", "d", "[]")
	require.NoError(t, err)

	// The restored file, made elsewhere, has project 2 only.
	restored := open(t, filepath.Join(dir, "restored.db"))
	_, err = restored.p.w.Exec(InsertProject, 2, "new", "d", "[]")
	require.NoError(t, err)
	require.NoError(t, restored.Close())

	require.NoError(t, os.Remove(path))
	_, err = s.Projects(context.Background(), []int64{1})
	require.ErrorContains(t, err, "no longer exists")

	require.NoError(t, os.Rename(filepath.Join(dir, "restored.db"), path))
	ps, err := s.Projects(context.Background(), []int64{1, 2})
	require.NoError(t, err)
	require.Len(t, ps, 1)
	require.EqualValues(t, 2, ps[0].ID)
	require.Equal(t, 1, logs.FilterMessageSnippet("WAYWO_DB was replaced").Len())

	// Writes go to the new file too, and its state table exists.
	_, err = s.SaveEmbeddings(context.Background(), []Embedding{{ID: 2, Source: source("new", "d", "[]"), Blob: make([]byte, 16), Hash: "h"}}, "m", 4, time.Now())
	require.NoError(t, err)
	var n int
	require.NoError(t, s.p.r.Get(&n, "SELECT count(*) FROM embed_sync_state WHERE project_id = 2"))
	require.Equal(t, 1, n)

	// `mv another.db waywo.db`: replaced with no moment without a file.
	another := open(t, filepath.Join(dir, "another.db"))
	_, err = another.p.w.Exec(InsertProject, 3, "newer", "d", "[]")
	require.NoError(t, err)
	require.NoError(t, another.Close())
	require.NoError(t, os.Rename(filepath.Join(dir, "another.db"), path))
	ps, err = s.Projects(context.Background(), []int64{1, 2, 3})
	require.NoError(t, err)
	require.Len(t, ps, 1)
	require.EqualValues(t, 3, ps[0].ID)
	require.Equal(t, 2, logs.FilterMessageSnippet("WAYWO_DB was replaced").Len())
}
