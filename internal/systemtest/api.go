package systemtest

import (
	"context"
	"database/sql"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/proctest"
	"github.com/waywo/embed/internal/system"
)

// Project is a row of the backend's waywo_projects.
type Project struct {
	ID                 int64
	Title, Description string
	Hashtags           string // JSON, as the backend stores them
}

// RunAPI runs the whole system in this process as `go run ./cmd/api`
// does — embedded NATS, an in-process worker on ol, the sync over a WAYWO
// file that holds projects — with env's settings on top, until the test
// ends (then it must stop cleanly), and returns its base URL.
func RunAPI(t *testing.T, ol *ollamatest.Server, env map[string]string, projects ...Project) string {
	t.Helper()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "waywo.db")
	store, err := db.Open(context.Background(), dbPath, zap.NewNop())
	require.NoError(t, err)
	require.NoError(t, store.Close())
	raw, err := sql.Open("sqlite3", "file:"+dbPath)
	require.NoError(t, err)
	for _, p := range projects {
		_, err = raw.Exec(db.InsertProject, p.ID, p.Title, p.Description, p.Hashtags)
		require.NoError(t, err)
	}
	require.NoError(t, raw.Close())
	settings := map[string]string{
		"EMBED_HTTP_ADDR": "127.0.0.1:0", "EMBED_NATS_ADDR": proctest.Addr(t), "EMBED_DATA_DIR": filepath.Join(dir, "data"),
		"WAYWO_DB": dbPath, "OLLAMA_HOST": ol.URL, "EMBED_MODEL": ol.Model, "EMBED_DIMENSIONS": strconv.Itoa(ol.Dims),
		"EMBED_HEARTBEAT_INTERVAL": "50ms",
	}
	for k, v := range env {
		settings[k] = v
	}
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := settings[k]; return v, ok })
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	addr, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- system.RunAPI(ctx, cfg, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)), func(a string) { addr <- a })
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	select {
	case a := <-addr:
		return "http://" + a
	case err := <-done:
		t.Fatalf("api stopped: %v", err)
		return ""
	}
}
