package faults

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/proctest"
)

// 8. The disk under the api's embedded JetStream store fills up under
// load: /embed answers 503 at once with the reason (no 504 at the request
// timeout), /health says why, and once space is freed everything resumes
// with no restart. An api whose volume cannot hold EMBED_STREAM_MAX_BYTES
// refuses to start, naming it.
func fullDisk(t *testing.T) {
	buildBinaries(t)
	small := proctest.SmallDisk(t, "16m")
	p := startProc(t, t.TempDir(), "api", "api-too-small", map[string]string{
		"EMBED_HTTP_ADDR": proctest.Addr(t), "EMBED_NATS_ADDR": proctest.Addr(t), "EMBED_DATA_DIR": small,
		"EMBED_SYNC": "false", "EMBED_WORKER": "off", "EMBED_STREAM_MAX_BYTES": "1073741824",
	})
	require.Equal(t, 1, exitCode(t, p, 60*time.Second))
	require.Contains(t, p.Tail(3000), "EMBED_STREAM_MAX_BYTES=1073741824")

	store := proctest.SmallDisk(t, "64m")
	c := newCluster(t, clusterOptions{embeddedStore: store, apiEnv: map[string]string{"EMBED_STREAM_MAX_BYTES": "16777216"}})
	ctx, stop := context.WithCancel(context.Background())
	ty, waitTraffic := c.traffic(ctx, 3)
	ev, waitEvents := c.events(ctx, 50*time.Millisecond)
	require.Eventually(t, func() bool { return ty.ok.Load() > 5 && ev.sent.Load() > 5 }, 30*time.Second, 10*time.Millisecond)

	filled := time.Now()
	filler := proctest.Fill(t, store)
	var reason string
	require.Eventually(t, func() bool {
		var s int
		s, reason = c.health()
		return s == http.StatusServiceUnavailable && strings.Contains(reason, "cannot write")
	}, 10*time.Second, 20*time.Millisecond, "/health says the store cannot write")
	noticed := time.Since(filled)
	refusedAt := ty.refused.Load()
	require.Eventually(t, func() bool { return ty.refused.Load() > refusedAt+3 }, 20*time.Second, 10*time.Millisecond, "requests are refused")
	longest := ty.slowestRefusal(filled)

	freed := time.Now()
	require.NoError(t, os.Remove(filler))
	c.waitHealthy(30 * time.Second)
	recovered := time.Since(freed)
	okAfter := ty.ok.Load()
	require.Eventually(t, func() bool { return ty.ok.Load() > okAfter+10 }, 30*time.Second, 10*time.Millisecond, "traffic resumes")
	stop()
	waitTraffic()
	waitEvents()
	require.True(t, c.api.Alive(), "no restart")
	t.Logf("full disk: /health 503 after %s (%q); longest request while full %s; healthy %s after space was freed", noticed, reason, longest, recovered)
	record(t, "disk under the store full", ty, ev, c.projects, c.settle(60*time.Second),
		fmt.Sprintf("/health 503 %s after the disk filled; requests meanwhile 503 within %s; healthy again %s after space was freed, no restart; a volume too small for EMBED_STREAM_MAX_BYTES is refused at start naming it",
			noticed.Round(10*time.Millisecond), longest.Round(time.Millisecond), recovered.Round(10*time.Millisecond)))
}

// 9. The WAYWO file replaced under the running api (the backend stopped,
// a backup restored with mv, the backend started again): the api notices,
// reopens, and brings the restored file's rows up to date.
func replacedDatabase(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	ctx, stop := context.WithCancel(context.Background())
	ty, waitTraffic := c.traffic(ctx, 2)
	evCtx, stopEvents := context.WithCancel(ctx)
	ev, waitEvents := c.events(evCtx, 50*time.Millisecond)
	require.Eventually(t, func() bool { return ty.ok.Load() > 5 && ev.sent.Load() > 10 }, 30*time.Second, 10*time.Millisecond)
	stopEvents() // the backend stops
	waitEvents()
	evBefore := ev.sent.Load()
	require.NoError(t, c.raw.Close())

	// The backup: every project, older texts, no vectors.
	backup := filepath.Join(c.dir, "backup.db")
	store, err := db.Open(context.Background(), backup, zap.NewNop())
	require.NoError(t, err)
	require.NoError(t, store.Close())
	raw, err := sql.Open("sqlite3", "file:"+backup)
	require.NoError(t, err)
	for id := 1; id <= c.projects; id++ {
		_, err := raw.Exec(db.InsertProject, id, fmt.Sprintf("Project %d (restored)", id), ollamatest.Sentence(uint64(500+id), 10), `["faults"]`)
		require.NoError(t, err)
	}
	require.NoError(t, raw.Close())
	restored := time.Now()
	require.NoError(t, os.Rename(backup, c.dbPath))
	// The backend starts again once the api has let go of the old file: a
	// connection opened while one of the api's was still open on it would
	// pair the new file with the old one's -wal and -shm (SQLite's "How to
	// corrupt", 1.3), which is why docs/operations.md orders a restore so.
	require.Eventually(t, func() bool { return strings.Contains(c.api.Tail(1<<20), "WAYWO_DB was replaced") },
		30*time.Second, 20*time.Millisecond, "the api notices the restored file on its next use")

	c.raw, err = sql.Open("sqlite3", "file:"+c.dbPath+"?_busy_timeout=30000")
	require.NoError(t, err)
	c.raw.SetMaxOpenConns(1)
	t.Cleanup(func() { c.raw.Close() })
	ev2, waitEvents2 := c.events(ctx, 50*time.Millisecond) // the backend again
	lost := c.settle(60 * time.Second)
	caughtUp := time.Since(restored)
	stop()
	waitTraffic()
	waitEvents2()
	ev.sent.Add(ev2.sent.Load())
	require.Contains(t, c.api.Tail(1<<20), "WAYWO_DB was replaced")
	t.Logf("replaced file: every row of the restored file up to date %s after the mv (events before %d, after %d)", caughtUp, evBefore, ev2.sent.Load())
	record(t, "WAYWO file replaced", ty, ev, c.projects, lost+c.settle(60*time.Second),
		fmt.Sprintf("reopened on the next use (log: \"WAYWO_DB was replaced\"); every row of the restored file embedded %s after the mv", caughtUp.Round(10*time.Millisecond)))
}

// slowProxy is fault injection in front of the shared Ollama: its model
// calls take delay longer (the rest passes straight through).
func slowProxy(t *testing.T) (u string, delay *atomic.Int64) {
	t.Helper()
	ol := ollamatest.Shared(t)
	delay = &atomic.Int64{}
	target, err := url.Parse(ol.URL)
	require.NoError(t, err)
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/embed" {
			select {
			case <-time.After(time.Duration(delay.Load())):
			case <-r.Context().Done():
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	return proxy.URL, delay
}

// 10. Callers who give up: ten requests of a full batch each, abandoned
// after 300 ms while the model takes 2 s a call. Their jobs are dropped
// unstarted, so the next caller waits for the calls already running, not
// for ten.
func abandonedRequests(t *testing.T) {
	proxyURL, delay := slowProxy(t)
	c := newCluster(t, clusterOptions{ollamaURL: proxyURL})
	require.Zero(t, c.settle(60*time.Second), "the first reconcile is done: only the callers below use the model")
	delay.Store(int64(2 * time.Second))
	impatient := &http.Client{Timeout: 300 * time.Millisecond}
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			docs := make([]string, 8) // a full batch (EMBED_BATCH_SIZE=8)
			for j := range docs {
				docs[j] = fmt.Sprintf("%q", ollamatest.Sentence(uint64(100*i+j), 6))
			}
			_, err := impatient.Post(c.apiURL+"/embed", "application/json", strings.NewReader(`{"documents":[`+strings.Join(docs, ",")+`]}`))
			require.Error(t, err, "the caller gave up")
		})
	}
	wg.Wait()
	start := time.Now()
	resp, err := http.Post(c.apiURL+"/embed", "application/json", strings.NewReader(`{"documents":["the next caller"]}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	next := time.Since(start)
	t.Logf("abandoned: the next caller waited %s (2 s per model call, 10 abandoned batches on 2 workers)", next)
	// Uncancelled, the ten batches cost five calls per worker: 10 s.
	require.Less(t, next, 5*time.Second, "the abandoned batches were computed")
	delay.Store(0)

	ty, ev := c.steady(2, 10, 5, 30*time.Second)
	record(t, "abandoned requests", ty, ev, c.projects, c.settle(60*time.Second),
		fmt.Sprintf("10 callers of a full batch each gave up after 0.3 s with the model at 2 s a call: the next caller waited %s (about 10 s if their batches were computed)", next.Round(10*time.Millisecond)))
}
