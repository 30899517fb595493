package projectsync_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/deadletter"
	"github.com/waywo/embed/internal/ollama"
	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/projectsync"
	"github.com/waywo/embed/internal/prompt"
	"github.com/waywo/embed/internal/systemtest"
	"github.com/waywo/embed/internal/vector"
	"github.com/waywo/embed/internal/wire"
	"github.com/waywo/embed/internal/worker"
)

func TestMain(m *testing.M) { ollamatest.RunTests(m) }

// env is the sync over real parts: a SQLite file, the shared system
// (systemtest.Bundle), a worker on the shared tiny Ollama model.
type env struct {
	*systemtest.Bundle
	t      *testing.T
	path   string
	raw    *sql.DB // a second connection, as the backend would have
	store  *db.Store
	syncer *projectsync.Syncer
	ollama *ollamatest.Server
	direct *ollama.Endpoint
	calls  atomic.Int64 // Ollama calls made by the worker
}

// backendSchema is an existing WAYWO file: the backend's columns plus
// some it may add later, all of which we must leave alone.
const backendSchema = `
CREATE TABLE waywo_projects (
	id INTEGER PRIMARY KEY,
	source_comment_id INTEGER NOT NULL DEFAULT 1,
	is_valid_project BOOLEAN NOT NULL DEFAULT 1,
	title TEXT NOT NULL,
	short_description TEXT NOT NULL DEFAULT '',
	description TEXT NOT NULL,
	hashtags TEXT NOT NULL,
	description_embedding BLOB,
	idea_score INTEGER NOT NULL DEFAULT 5,
	complexity_score INTEGER NOT NULL DEFAULT 5,
	is_bookmarked BOOLEAN NOT NULL DEFAULT 0,
	source TEXT DEFAULT 'hn',
	umap_x REAL,
	umap_y REAL,
	screenshot_path TEXT,
	extra_notes TEXT,
	created_at DATETIME NOT NULL DEFAULT '2025-01-02 03:04:05.678901',
	processed_at DATETIME NOT NULL DEFAULT '2025-01-02 03:04:05.678901'
);`

type envOptions struct {
	schema     string // empty: let db.Open create the backend's schema
	noConsumer bool
	noTruncate bool // the worker refuses texts longer than the model's context
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	ol := ollamatest.Shared(t)
	sys := systemtest.Setup(t, systemtest.Options{Dims: ol.Dims})
	e := &env{Bundle: sys, t: t, path: filepath.Join(t.TempDir(), "waywo.db"), ollama: ol}

	var err error
	e.raw, err = sql.Open("sqlite3", "file:"+e.path+"?_busy_timeout=10000")
	require.NoError(t, err)
	t.Cleanup(func() { e.raw.Close() })
	if o.schema != "" {
		_, err = e.raw.Exec(o.schema)
		require.NoError(t, err)
	}
	e.store, err = db.Open(context.Background(), e.path, sys.Log)
	require.NoError(t, err)
	t.Cleanup(func() { e.store.Close() })

	// As a configured worker does before its first job, the endpoint
	// checks the model and reads its fingerprint.
	ep := ol.Endpoint(t, ollamatest.EndpointOptions{NoTrunc: o.noTruncate, OnCall: func(int, time.Duration, error) { e.calls.Add(1) }})
	sys.StartWorker(systemtest.WorkerOptions{Models: []worker.Model{ep}})
	sys.WaitReady(1)

	u, err := url.Parse(ol.URL)
	require.NoError(t, err)
	e.direct = ollama.NewEndpoint(u, ollama.Options{
		Model: ol.Model, Dims: ol.Dims, MaxBatch: 32, Timeout: 30 * time.Second, KeepAlive: -1, Truncate: true,
	})
	e.syncer = &projectsync.Syncer{Store: e.store, Queue: sys.Client, Model: ol.Model, Dims: ol.Dims,
		MaxTextBytes: 128 << 10, Now: time.Now, Log: sys.Log,
		Fingerprint: e.Workers.Fingerprint}
	if !o.noConsumer {
		e.startConsumer()
	}
	return e
}

func (e *env) startConsumer() { e.t.Cleanup(e.runConsumer(e.Log)) }

// runConsumer starts a consumer logging to log; stop ends it and waits.
func (e *env) runConsumer(log *zap.Logger) (stop func()) {
	t := e.t
	cons, err := projectsync.EnsureProjects(context.Background(), e.JS, broker.Placement{}, time.Minute, 3)
	require.NoError(t, err)
	c := &projectsync.Consumer{
		Syncer: e.syncer, Consumer: cons, DeadLetters: &deadletter.Writer{JS: e.JS, Log: log},
		Ready: func() bool { n, _ := e.Workers.Ready(); return n > 0 },
		Batch: 32, Parallel: 2, MaxDeliver: 3, Timeout: 30 * time.Second, Log: log,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	return func() { cancel(); <-done }
}

// insert adds a project through the backend's connection.
func (e *env) insert(id int64, title, description, hashtags string) {
	e.t.Helper()
	_, err := e.raw.Exec(db.InsertProject, id, title, description, hashtags)
	require.NoError(e.t, err)
}

func (e *env) publish(id int64) {
	e.t.Helper()
	_, err := e.JS.Publish(context.Background(), fmt.Sprintf("waywo.projects.changed.%d", id), nil)
	require.NoError(e.t, err)
}

// blob reads a project's stored vector; nil when there is none.
func (e *env) blob(id int64) []float32 {
	e.t.Helper()
	var b []byte
	require.NoError(e.t, e.raw.QueryRow("SELECT description_embedding FROM waywo_projects WHERE id = ?", id).Scan(&b))
	if b == nil {
		return nil
	}
	v, err := vector.Decode(b, e.ollama.Dims)
	require.NoError(e.t, err)
	return v
}

// reference is the model's own vector of text, straight from Ollama.
func (e *env) reference(text string) []float32 {
	e.t.Helper()
	out, err := e.direct.EmbedAll(context.Background(), []string{text})
	require.NoError(e.t, err)
	require.NoError(e.t, out.Rejected[0])
	return out.Vectors[0]
}

// settled waits until the events stream and its consumer are empty. The
// stream's own count comes first: a consumer's num_pending lags a publish
// (the consumer learns of new messages on its own goroutine), so right
// after one the consumer alone can look idle; the work-queue stream
// removes a message only when it is acked.
func (e *env) settled() {
	e.t.Helper()
	require.Eventually(e.t, func() bool {
		n, err := projectsync.ProjectsBacklog(context.Background(), e.JS)
		if err != nil || n > 0 {
			return false
		}
		c, err := e.JS.Consumer(context.Background(), wire.ProjectsStream, wire.ProjectsConsumer)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0
	}, 60*time.Second, 20*time.Millisecond)
}

func (e *env) deadLetters() []deadletter.Stored {
	e.t.Helper()
	dls, err := deadletter.List(context.Background(), e.JS, "projects", 1000)
	require.NoError(e.t, err)
	return dls
}

func projectText(title, description string, tags ...string) string {
	return prompt.ProjectText(title, description, tags)
}

// everything is one page holding every listed project.
var everything = projectsync.Page{Limit: 1 << 30}
