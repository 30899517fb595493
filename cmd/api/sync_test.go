package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/proctest"
	"github.com/waywo/embed/internal/vector"
)

func syncConfig(t *testing.T, extra map[string]string) (config.Config, string) {
	t.Helper()
	ol := ollamatest.Shared(t)
	dir := t.TempDir()
	env := map[string]string{
		"EMBED_HTTP_ADDR":          "127.0.0.1:0",
		"EMBED_NATS_ADDR":          proctest.Addr(t),
		"EMBED_DATA_DIR":           dir,
		"WAYWO_DB":                 filepath.Join(dir, "waywo.db"),
		"OLLAMA_HOST":              ol.URL,
		"EMBED_MODEL":              ol.Model,
		"EMBED_DIMENSIONS":         strconv.Itoa(ol.Dims),
		"EMBED_HEARTBEAT_INTERVAL": "50ms",
	}
	for k, v := range extra {
		env[k] = v
	}
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	require.NoError(t, err)
	return cfg, env["WAYWO_DB"]
}

func insertProjects(t *testing.T, path string, from, to int) {
	t.Helper()
	raw, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
	require.NoError(t, err)
	defer raw.Close()
	tx, err := raw.Begin()
	require.NoError(t, err)
	for id := from; id <= to; id++ {
		_, err := tx.Exec(db.InsertProject, id, fmt.Sprintf("Project %d", id), ollamatest.Sentence(uint64(id), 8), `["waywo"]`)
		require.NoError(t, err)
	}
	require.NoError(t, tx.Commit())
}

func blob(t *testing.T, path string, id int) []byte {
	t.Helper()
	raw, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000&mode=ro")
	require.NoError(t, err)
	defer raw.Close()
	var b []byte
	require.NoError(t, raw.QueryRow("SELECT description_embedding FROM waywo_projects WHERE id = ?", id).Scan(&b))
	return b
}

// hasBlob says whether the row holds a vector of dims floats; a row that
// starts with some other blob (not ours) does not, until the sync replaces it.
func hasBlob(t *testing.T, path string, id int, dims int) bool {
	t.Helper()
	b := blob(t, path, id)
	if b == nil {
		return false
	}
	_, err := vector.Decode(b, dims)
	return err == nil
}

// The api embeds the rows it finds at start (the reconcile), then
// re-embeds a project on a NATS event and on POST /projects/{id}/changed,
// and reports through /projects/sync-status.
func TestRunSyncsProjects(t *testing.T) {
	t.Parallel()
	cfg, path := syncConfig(t, nil)
	store, err := db.Open(context.Background(), path, zap.NewNop()) // the file as the backend has it
	require.NoError(t, err)
	require.NoError(t, store.Close())
	insertProjects(t, path, 1, 3)
	base, cancel, done := startRun(t, cfg)
	defer cancel()

	status := func() (st struct {
		Total, Embedded, Stale, Pending, Failed int
	}) {
		resp, err := http.Get(base + "/projects/sync-status")
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
		return st
	}
	require.Eventually(t, func() bool { return status().Embedded == 3 }, 30*time.Second, 20*time.Millisecond)
	before := map[int][]byte{1: blob(t, path, 1), 2: blob(t, path, 2), 3: blob(t, path, 3)}

	raw, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
	require.NoError(t, err)
	defer raw.Close()
	_, err = raw.Exec("UPDATE waywo_projects SET title = 'Renamed ' || id WHERE id IN (1, 2)")
	require.NoError(t, err)
	require.Equal(t, 2, status().Stale)

	nc, err := nats.Connect("nats://" + cfg.NATSAddr)
	require.NoError(t, err)
	defer nc.Close()
	require.NoError(t, nc.Publish("waywo.projects.changed.1", nil)) // core NATS, as a plain nats-py publish
	require.NoError(t, nc.Flush())
	resp, err := http.Post(base+"/projects/2/changed", "", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	for _, bad := range []string{"abc", "-1", "0", "1.5", "01"} {
		resp, err := http.Post(base+"/projects/"+bad+"/changed", "", nil)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, bad)
	}
	resp, err = http.Get(base + "/projects/2/changed")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	require.Eventually(t, func() bool { return status().Embedded == 3 }, 30*time.Second, 20*time.Millisecond)
	require.NotEqual(t, before[1], blob(t, path, 1))
	require.NotEqual(t, before[2], blob(t, path, 2))
	require.Equal(t, before[3], blob(t, path, 3))
	_, err = vector.Decode(blob(t, path, 1), cfg.Dimensions)
	require.NoError(t, err)

	cancel()
	require.NoError(t, <-done)
}

// `api reindex` alone starts its own system; next to a running api it
// uses that api's nats-server and workers. Either way it reports.
func TestReindexCommand(t *testing.T) {
	t.Parallel()
	cfg, path := syncConfig(t, map[string]string{"EMBED_RECONCILE_INTERVAL": "0"})
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	// Create the file as the api would, then fill it.
	sys := func() {
		var out, progress bytes.Buffer
		require.NoError(t, reindexCommand(context.Background(), cfg, log, nil, &out, &progress))
	}
	sys() // nothing to do on an empty table
	insertProjects(t, path, 1, 120)

	var out, progress bytes.Buffer
	require.NoError(t, reindexCommand(context.Background(), cfg, log, nil, &out, &progress))
	require.Contains(t, out.String(), "120 projects to sync")
	require.Regexp(t, `reindex done: 120 projects in .* \([0-9.]+/s\)`, out.String())
	require.Contains(t, out.String(), "embedded   120")
	require.Contains(t, progress.String(), "120/120")
	require.True(t, hasBlob(t, path, 120, cfg.Dimensions))

	// With an api running (its reconcile off), reindex --all joins it.
	insertProjects(t, path, 121, 125)
	_, cancel, done := startRun(t, cfg)
	defer cancel()
	out.Reset()
	require.NoError(t, reindexCommand(context.Background(), cfg, log, []string{"--all"}, &out, &progress))
	require.Contains(t, out.String(), "125 projects to sync")
	require.Contains(t, out.String(), "unchanged  0")
	require.True(t, strings.Contains(out.String(), "embedded   125"), out.String())
	cancel()
	require.NoError(t, <-done)

	require.ErrorContains(t, reindexCommand(context.Background(), cfg, log, []string{"extra"}, &out, &progress), "no arguments")
}

// `api deadletters list` shows a dead-lettered event with its reason;
// after the row is fixed, `replay` sends it again and the sync embeds it.
func TestDeadLettersCommand(t *testing.T) {
	t.Parallel()
	cfg, path := syncConfig(t, map[string]string{"EMBED_RECONCILE_INTERVAL": "0"})
	log := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
	_, cancel, done := startRun(t, cfg)
	defer func() { cancel(); require.NoError(t, <-done) }()
	raw, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
	require.NoError(t, err)
	defer raw.Close()
	_, err = raw.Exec(db.InsertProject, 7, "Broken tags", "d", "rust, go")
	require.NoError(t, err)
	nc, err := nats.Connect("nats://" + cfg.NATSAddr)
	require.NoError(t, err)
	defer nc.Close()
	require.NoError(t, nc.Publish("waywo.projects.changed.7", nil))

	var out bytes.Buffer
	require.Eventually(t, func() bool {
		out.Reset()
		require.NoError(t, deadLettersCommand(context.Background(), cfg, log, []string{"list", "--kind", "projects"}, &out))
		return strings.Contains(out.String(), "1 dead letters")
	}, 30*time.Second, 50*time.Millisecond)
	require.Contains(t, out.String(), "waywo.projects.changed.7")
	require.Contains(t, out.String(), "hashtags is not a JSON array of strings")

	_, err = raw.Exec(`UPDATE waywo_projects SET hashtags = '["rust","go"]' WHERE id = 7`)
	require.NoError(t, err)
	out.Reset()
	require.NoError(t, deadLettersCommand(context.Background(), cfg, log, []string{"replay"}, &out))
	require.Contains(t, out.String(), "replayed 1 project events")
	require.Eventually(t, func() bool { return hasBlob(t, path, 7, cfg.Dimensions) }, 30*time.Second, 20*time.Millisecond)
	out.Reset()
	require.NoError(t, deadLettersCommand(context.Background(), cfg, log, []string{"list"}, &out))
	require.Contains(t, out.String(), "0 dead letters")

	require.ErrorContains(t, deadLettersCommand(context.Background(), cfg, log, []string{"purge"}, &out), "list or replay")
}

// A WAYWO file the sync cannot open does not keep /embed from serving:
// sync-status answers 503 with the reason, and events are still taken.
func TestBrokenDatabaseDoesNotStopEmbed(t *testing.T) {
	t.Parallel()
	cfg, path := syncConfig(t, nil)
	require.NoError(t, os.WriteFile(path, bytes.Repeat([]byte("not sqlite "), 1000), 0o644))
	base, cancel, done := startRun(t, cfg)
	defer func() { cancel(); require.NoError(t, <-done) }()
	waitHealthy(t, base, 60*time.Second)

	resp, err := http.Post(base+"/embed", "application/json", strings.NewReader(`{"documents":["still serving"]}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	var st struct{ Error, Code string }
	require.Eventually(t, func() bool {
		resp, err := http.Get(base + "/projects/sync-status")
		require.NoError(t, err)
		defer resp.Body.Close()
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(st.Error, "not a database")
	}, 10*time.Second, 20*time.Millisecond, "%+v", st)
	require.Contains(t, st.Error, "WAYWO_DB="+path)

	resp, err = http.Post(base+"/projects/7/changed", "application/json", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "the event waits in its stream for the sync")
}

// A WAYWO file replaced while the api runs (a backup restored with mv) is
// the one the sync reads and writes from then on: an event for a project
// only the new file has is embedded into the new file.
func TestReplacedDatabaseIsSynced(t *testing.T) {
	t.Parallel()
	cfg, path := syncConfig(t, nil)
	store, err := db.Open(context.Background(), path, zap.NewNop())
	require.NoError(t, err)
	require.NoError(t, store.Close())
	insertProjects(t, path, 1, 2)
	base, cancel, done := startRun(t, cfg)
	defer func() { cancel(); require.NoError(t, <-done) }()
	require.Eventually(t, func() bool { return hasBlob(t, path, 1, cfg.Dimensions) && hasBlob(t, path, 2, cfg.Dimensions) },
		30*time.Second, 20*time.Millisecond)

	restored := filepath.Join(filepath.Dir(path), "restored.db")
	store, err = db.Open(context.Background(), restored, zap.NewNop())
	require.NoError(t, err)
	require.NoError(t, store.Close())
	insertProjects(t, restored, 1, 3) // the backup: no vectors, and a project 3
	require.NoError(t, os.Rename(restored, path))

	resp, err := http.Post(base+"/projects/3/changed", "", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Eventually(t, func() bool { return hasBlob(t, path, 3, cfg.Dimensions) }, 30*time.Second, 20*time.Millisecond,
		"project 3, only in the new file, is embedded there")
	var st struct{ Total int }
	resp, err = http.Get(base + "/projects/sync-status")
	require.NoError(t, err)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	resp.Body.Close()
	require.Equal(t, 3, st.Total, "counts come from the new file")
}

// Whatever the path holds after a replacement is checked and set up as a
// file found at start — our table created, its rows embedded where
// missing or stale, without waiting for the next reconcile — whether the
// file keeps the old one's inode or not: a backup from before this service
// ran copied over it, a fresh file from the backend, our table dropped.
func TestReplacedFileIsANewFile(t *testing.T) {
	t.Parallel()
	backendFile := func(t *testing.T, path string, from, to int) {
		t.Helper()
		raw, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
		require.NoError(t, err)
		defer raw.Close()
		_, err = raw.Exec(db.BackendSchema)
		require.NoError(t, err)
		for id := from; id <= to; id++ {
			_, err := raw.Exec(db.InsertProject, id, fmt.Sprintf("Project %d", id), ollamatest.Sentence(uint64(id), 8), `["waywo"]`)
			require.NoError(t, err)
		}
		// A vector the old Python service wrote: of unknown origin, stale.
		_, err = raw.Exec("UPDATE waywo_projects SET description_embedding = zeroblob(?) WHERE id = 1", 4*384)
		require.NoError(t, err)
	}
	for _, tc := range []struct {
		name    string
		replace func(t *testing.T, path string)
	}{
		{"restored from a backup from before this service", func(t *testing.T, path string) {
			backup := filepath.Join(t.TempDir(), "backup.db")
			backendFile(t, backup, 1, 8)
			b, err := os.ReadFile(backup)
			require.NoError(t, err)
			require.NoError(t, os.Remove(path))
			require.NoError(t, os.WriteFile(path, b, 0o644)) // rm; cp: often the same inode again
		}},
		{"a fresh file from the backend", func(t *testing.T, path string) {
			require.NoError(t, os.Remove(path))
			backendFile(t, path, 1, 8)
		}},
		{"our table dropped", func(t *testing.T, path string) {
			raw, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
			require.NoError(t, err)
			defer raw.Close()
			_, err = raw.Exec("DROP TABLE embed_sync_state")
			require.NoError(t, err)
			insertProjects(t, path, 3, 8)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, path := syncConfig(t, map[string]string{"EMBED_RECONCILE_INTERVAL": "1h"})
			base, cancel, done := startRun(t, cfg)
			defer func() { cancel(); require.NoError(t, <-done) }()
			insertProjects(t, path, 1, 2)
			for _, id := range []int{1, 2} {
				resp, err := http.Post(fmt.Sprintf("%s/projects/%d/changed", base, id), "", nil)
				require.NoError(t, err)
				resp.Body.Close()
			}
			// The file is replaced once the api is done with it: SQLite
			// cannot survive a file changed under an open connection.
			require.Eventually(t, func() bool {
				var st struct {
					Embedded int
					Queued   int `json:"queued_events"`
				}
				resp, err := http.Get(base + "/projects/sync-status")
				require.NoError(t, err)
				defer resp.Body.Close()
				require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
				return st.Embedded == 2 && st.Queued == 0
			}, 30*time.Second, 20*time.Millisecond)

			tc.replace(t, path)
			// Events for half the projects; the rest is found by the
			// reconcile a new file calls for, not by the hourly one.
			for id := 1; id <= 4; id++ {
				resp, err := http.Post(fmt.Sprintf("%s/projects/%d/changed", base, id), "", nil)
				require.NoError(t, err)
				resp.Body.Close()
				require.Equal(t, http.StatusAccepted, resp.StatusCode)
			}
			var st struct{ Total, Embedded, Stale, Pending, Failed int }
			require.Eventually(t, func() bool {
				resp, err := http.Get(base + "/projects/sync-status")
				require.NoError(t, err)
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return false
				}
				require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
				return st.Embedded == 8
			}, 60*time.Second, 50*time.Millisecond, "sync-status: %+v", st)
			require.Equal(t, 8, st.Total)
			for id := 1; id <= 8; id++ {
				require.True(t, hasBlob(t, path, id, cfg.Dimensions), "project %d", id)
			}
		})
	}
}
