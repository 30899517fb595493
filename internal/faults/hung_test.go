package faults

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/ollama"
	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/proctest"
	"github.com/waywo/embed/internal/prompt"
	"github.com/waywo/embed/internal/vector"
	"github.com/waywo/embed/internal/wire"
)

// An Ollama that stops answering without closing its socket (SIGSTOP: a
// stuck GPU, a frozen host) is found within seconds by its worker, which
// gives back the jobs it holds for it and takes no more until it answers
// again: with two workers, each on its own Ollama, requests during the
// stall succeed through the other in about their usual time, and no
// project is embedded twice into the file.
func TestHungModelIsFoundQuickly(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the system as processes with two Ollamas")
	}
	ollamatest.Exclusive(t)
	buildBinaries(t)
	dir := t.TempDir()
	var ols []*ollamatest.Server
	for _, name := range []string{"ollama-a", "ollama-b"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, name), 0o755))
		ol, err := ollamatest.StartServer(filepath.Join(dir, name), "PARAMETER num_thread 1")
		if err != nil {
			ollamatest.Unavailable(t, err)
		}
		t.Cleanup(ol.Stop)
		t.Cleanup(ol.Resume) // a paused server cannot stop
		ols = append(ols, ol)
	}

	// The backend's file, with a trigger that counts every write of a vector.
	const projects = 20
	dbPath := filepath.Join(dir, "waywo.db")
	store, err := db.Open(context.Background(), dbPath, zap.NewNop())
	require.NoError(t, err)
	require.NoError(t, store.Close())
	raw, err := sql.Open("sqlite3", "file:"+dbPath+"?_busy_timeout=30000")
	require.NoError(t, err)
	raw.SetMaxOpenConns(1)
	t.Cleanup(func() { raw.Close() })
	_, err = raw.Exec(`CREATE TABLE vector_writes (id INTEGER);
CREATE TRIGGER count_vector_writes AFTER UPDATE OF description_embedding ON waywo_projects
BEGIN INSERT INTO vector_writes VALUES (NEW.id); END;`)
	require.NoError(t, err)
	for id := 1; id <= projects; id++ {
		_, err := raw.Exec(db.InsertProject, id, fmt.Sprintf("Project %d", id), ollamatest.Sentence(uint64(id), 10), `["hung"]`)
		require.NoError(t, err)
	}

	natsPort := proctest.Port(t)
	roles := proctest.NewRoles()
	startProc(t, dir, "nats-server", "nats-server", roles.Server(), "-c", loneNATS(t, dir, natsPort))
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	httpAddr := proctest.Addr(t)
	common := map[string]string{"NATS_URL": natsURL, "EMBED_MODEL": ols[0].Model, "EMBED_DIMENSIONS": strconv.Itoa(ols[0].Dims),
		"EMBED_HEARTBEAT_INTERVAL": "200ms"}
	env := func(m map[string]string) map[string]string {
		for k, v := range common {
			m[k] = v
		}
		return m
	}
	api := startProc(t, dir, "api", "api", proctest.With(env(map[string]string{"EMBED_HTTP_ADDR": httpAddr, "EMBED_DATA_DIR": filepath.Join(dir, "api-data"),
		"WAYWO_DB": dbPath, "EMBED_WORKER": "off", "EMBED_CACHE_SIZE": "0", "EMBED_RECONCILE_INTERVAL": "1h"}), roles.As(wire.RoleAPI)))
	var workers []*proctest.Process
	for i, ol := range ols {
		workers = append(workers, startProc(t, dir, "worker", fmt.Sprintf("worker%d", i+1), proctest.With(env(map[string]string{
			"OLLAMA_HOST": ol.URL, "EMBED_WORKER_ID": fmt.Sprintf("w%d", i+1), "EMBED_METRICS_ADDR": proctest.Addr(t), "EMBED_BATCH_SIZE": "8",
		}), roles.As(wire.RoleWorker))))
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range append([]*proctest.Process{api}, workers...) {
				t.Logf("--- %s log, its warnings and hand-backs:\n%s", p.Name, notable(p.Tail(1<<20)))
			}
		}
	})
	base := "http://" + httpAddr
	workersReady := func() int {
		hc := http.Client{Timeout: 2 * time.Second}
		resp, err := hc.Get(base + "/health")
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		var h struct{ Workers int }
		_ = json.NewDecoder(resp.Body).Decode(&h)
		return h.Workers
	}
	require.Eventually(t, func() bool { return workersReady() == 2 }, 90*time.Second, 50*time.Millisecond, "both workers ready\n%s", api.Tail(2000))
	writes := func() map[int]int {
		out := map[int]int{}
		rows, err := raw.Query("SELECT id, count(*) FROM vector_writes GROUP BY id")
		require.NoError(t, err)
		defer rows.Close()
		for rows.Next() {
			var id, n int
			require.NoError(t, rows.Scan(&id, &n))
			out[id] = n
		}
		return out
	}
	require.Eventually(t, func() bool { return len(writes()) == projects }, 60*time.Second, 50*time.Millisecond, "the reconcile at start embeds every project")

	// Steady queries from 4 clients, timed.
	type timed struct {
		at   time.Time
		took time.Duration
		code int
	}
	var mu sync.Mutex
	var done []timed
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for c := range 4 {
		wg.Go(func() {
			hc := &http.Client{Timeout: 60 * time.Second}
			for i := 0; ctx.Err() == nil; i++ {
				start := time.Now()
				body := fmt.Sprintf(`{"documents":[%q]}`, ollamatest.Sentence(uint64(1000*c+i), 8))
				resp, err := hc.Post(base+"/embed", "application/json", strings.NewReader(body))
				code := 0
				if err == nil {
					code = resp.StatusCode
					resp.Body.Close()
				}
				mu.Lock()
				done = append(done, timed{start, time.Since(start), code})
				mu.Unlock()
			}
		})
	}
	waitRequests := func(n int) {
		mu.Lock()
		from := len(done)
		mu.Unlock()
		require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(done) >= from+n }, 30*time.Second, 5*time.Millisecond)
	}
	waitRequests(40)

	// Ollama A stops for 12 s; projects change and are announced meanwhile.
	pausedAt := time.Now()
	ols[0].Pause()
	nc, err := nats.Connect(natsURL)
	require.NoError(t, err)
	defer nc.Close()
	for id := 1; id <= projects/2; id++ {
		_, err := raw.Exec("UPDATE waywo_projects SET title = 'Changed ' || id WHERE id = ?", id)
		require.NoError(t, err)
		require.NoError(t, nc.Publish(fmt.Sprintf("waywo.projects.changed.%d", id), nil))
	}
	require.NoError(t, nc.Flush())
	for time.Since(pausedAt) < 12*time.Second {
		waitRequests(1)
	}
	ols[0].Resume()
	resumedAt := time.Now()
	require.Eventually(t, func() bool { return workersReady() == 2 }, 30*time.Second, 50*time.Millisecond,
		"the stalled Ollama's worker is ready again once it answers\n%s", workers[0].Tail(3000))
	waitRequests(40)
	stop()
	wg.Wait()

	// Every request answered 200; during the stall none waited more than a
	// few seconds beyond its usual time.
	var before, during []time.Duration
	for _, d := range done {
		require.Equal(t, http.StatusOK, d.code)
		end := d.at.Add(d.took)
		switch {
		case end.Before(pausedAt):
			before = append(before, d.took)
		case d.at.Before(resumedAt): // in flight at some time of the stall
			during = append(during, d.took)
		}
	}
	before = before[len(before)/2:] // the steady half, after the models' first calls
	slices.Sort(before)
	slices.Sort(during)
	usual := before[len(before)*99/100]
	worst := during[len(during)-1]
	t.Logf("requests: before the stall p99 %s (the last %d), in flight during it %d (p50 %s, worst %s)",
		usual, len(before), len(during), during[len(during)/2], worst)
	for _, d := range done {
		if d.took == worst {
			t.Logf("the slowest began %s after the pause; the pause ended %s after it began",
				d.at.Sub(pausedAt).Round(time.Millisecond), resumedAt.Sub(d.at).Round(time.Millisecond))
		}
	}
	require.Less(t, worst, usual+5*time.Second, "no request waits past a few seconds beyond its usual time")
	require.Contains(t, workers[0].Tail(20000), "model server stalled")

	// The changed projects end as the vectors of their new texts, each
	// written once more; the others were not written again.
	require.Eventually(t, func() bool {
		w := writes()
		for id := 1; id <= projects/2; id++ {
			if w[id] < 2 {
				return false
			}
		}
		return true
	}, 60*time.Second, 50*time.Millisecond, "the changed projects are embedded")
	for id, n := range writes() {
		want := 1
		if id <= projects/2 {
			want = 2
		}
		require.Equal(t, want, n, "project %d's vector was written %d times", id, n)
	}
	u, err := url.Parse(ols[1].URL)
	require.NoError(t, err)
	direct := ollama.NewEndpoint(u, ollama.Options{Model: ols[1].Model, Dims: ols[1].Dims, MaxBatch: 8, Timeout: 30 * time.Second, KeepAlive: -1, Truncate: true})
	for id := 1; id <= projects; id++ {
		var title, desc, tags string
		var blob []byte
		require.NoError(t, raw.QueryRow("SELECT title, description, hashtags, description_embedding FROM waywo_projects WHERE id = ?", id).Scan(&title, &desc, &tags, &blob))
		out, err := direct.EmbedAll(context.Background(), []string{prompt.ProjectText(title, desc, []string{"hung"})})
		require.NoError(t, err)
		got, err := vector.Decode(blob, ols[1].Dims)
		require.NoError(t, err)
		require.InDeltaSlice(t, out.Vectors[0], got, 1e-6, "project %d holds its latest text's vector", id)
	}
}

// notable is the lines of a process's log that tell what happened to its
// endpoints and jobs: warnings, errors and hand-backs.
func notable(log string) string {
	var out []string
	for line := range strings.Lines(log) {
		if strings.Contains(line, `"level":"warn"`) || strings.Contains(line, `"level":"error"`) ||
			strings.Contains(line, "handed back") || strings.Contains(line, "answers again") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "")
}
