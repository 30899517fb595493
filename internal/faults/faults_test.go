package faults

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/ollamatest"
)

func TestMain(m *testing.M) {
	if path := os.Getenv("FAULTS_LOCK_DB"); path != "" {
		os.Exit(holdWriteLock(path))
	}
	ollamatest.RunTests(m)
}

// holdWriteLock is the other process of scenario 4: it takes SQLite's write
// lock on path, says so on stdout, and holds it until a line (or the end)
// arrives on stdin.
func holdWriteLock(path string) int {
	conn, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=30000&_txlock=exclusive")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer conn.Close()
	tx, err := conn.Begin()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	if _, err := tx.Exec("UPDATE waywo_projects SET title = title WHERE id = 1"); err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("locked")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	if err := tx.Commit(); err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("released")
	return 0
}

// outcome is one row of the table printed at the end.
type outcome struct {
	scenario                       string
	sent, ok, refused, hung, wrong int64
	events, embedded, lost         int
	note                           string
}

var results struct {
	mu   sync.Mutex
	rows []outcome
}

func record(t *testing.T, name string, ty *tally, ev *events, projects, lost int, note ...string) {
	t.Helper()
	o := outcome{scenario: name, note: strings.Join(note, "; "), sent: ty.sent.Load(), ok: ty.ok.Load(), refused: ty.refused.Load(),
		hung: ty.hung.Load(), wrong: ty.wrong.Load(), events: int(ev.sent.Load()), embedded: projects - lost, lost: lost}
	results.mu.Lock()
	results.rows = append(results.rows, o)
	results.mu.Unlock()
	ty.mu.Lock()
	t.Logf("%s: requests %d ok %d refused %d hung %d wrong %d (%v); events %d; projects embedded %d lost %d",
		name, o.sent, o.ok, o.refused, o.hung, o.wrong, ty.reasons, o.events, o.embedded, o.lost)
	ty.mu.Unlock()
	require.Zero(t, o.hung, "requests hung")
	require.Zero(t, o.wrong, "wrong answers")
	require.Zero(t, lost, "projects without the vector of their latest text")
	require.Positive(t, o.ok, "no request succeeded")
	require.Positive(t, o.events, "no event sent")
}

// TestFaults runs the scenarios one after another (they share the Ollama
// and two cores) and prints the table: FAULTS_REPORT names a file to
// write it to as well (.ci/run shows it).
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault suite runs real processes for about two minutes")
	}
	ollamatest.Exclusive(t)
	t.Run("kill -9 a worker mid-batch", killWorker)
	t.Run("Ollama stopped for 30s", ollamaOutage)
	t.Run("nats-server restarted", natsRestart)
	t.Run("SQLite write-locked for 5s", sqliteLocked)
	t.Run("SIGTERM worker and api under load", sigterm)
	t.Run("slow Ollama", slowOllama)
	t.Run("NATS cluster: leader killed, quorum lost", natsClusterFaults)
	t.Run("disk under the embedded store full", fullDisk)
	t.Run("WAYWO file replaced", replacedDatabase)
	t.Run("abandoned requests", abandonedRequests)

	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\trequests sent\tok\trefused\thung\twrong\tevents sent\tprojects embedded\tlost\t")
	results.mu.Lock()
	var notes []string
	for _, r := range results.rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", r.scenario, r.sent, r.ok, r.refused, r.hung, r.wrong, r.events, r.embedded, r.lost)
		if r.note != "" {
			notes = append(notes, r.scenario+": "+r.note)
		}
	}
	results.mu.Unlock()
	tw.Flush()
	b.WriteString("\n" + strings.Join(notes, "\n") + "\n")
	t.Log("\n" + b.String())
	if path := os.Getenv("FAULTS_REPORT"); path != "" {
		require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
	}
}

// 1. A worker killed with -9 while it holds jobs: they go to the other
// worker after the ack wait; every request ends 200 or clearly refused.
func killWorker(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	ctx, stop := context.WithCancel(context.Background())
	ty, waitTraffic := c.traffic(ctx, 6)
	ev, waitEvents := c.events(ctx, 50*time.Millisecond)
	require.Eventually(t, func() bool { return ty.ok.Load() > 5 && c.ackPending() > 0 }, 30*time.Second, 5*time.Millisecond)
	c.workers[0].Kill() // SIGKILL, mid-batch: jobs are held unacknowledged
	killed := time.Now()
	okAtKill := ty.ok.Load()
	require.Eventually(t, func() bool { return ty.ok.Load() > okAtKill+20 }, 60*time.Second, 10*time.Millisecond,
		"the other worker takes over")
	stop()
	waitTraffic()
	waitEvents()
	// The dead worker's jobs come back after the ack wait (5 s) at most:
	// no caller waits much longer than that beyond the usual.
	longest, median := ty.around(killed)
	require.Less(t, longest, median+7*time.Second, "a request in flight at the kill waited %s (median %s)", longest, median)
	record(t, "kill -9 worker", ty, ev, c.projects, c.settle(60*time.Second),
		fmt.Sprintf("longest wait of a request in flight at the kill %s (median request %s; ack wait 5s)", longest.Round(10*time.Millisecond), median.Round(time.Millisecond)))
	require.True(t, c.workers[1].Alive())
}

// 2. Ollama stopped for 30 s: /health says 503 with the reason, events wait
// in the stream, and everything resumes by itself afterwards.
func ollamaOutage(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	ctx, stop := context.WithCancel(context.Background())
	ty, waitTraffic := c.traffic(ctx, 2)
	ev, waitEvents := c.events(ctx, 100*time.Millisecond)
	require.Eventually(t, func() bool { return ty.ok.Load() > 5 }, 30*time.Second, 10*time.Millisecond)

	c.ollama.Stop()
	t.Cleanup(func() { require.NoError(t, c.ollama.Restart()) }) // for the next scenarios, whatever happens here
	outageEnds := time.Now().Add(30 * time.Second)
	var reason string
	require.Eventually(t, func() bool {
		var s int
		s, reason = c.health()
		return s == http.StatusServiceUnavailable
	}, 20*time.Second, 20*time.Millisecond, "/health did not notice")
	require.Contains(t, reason, "no worker can embed now")
	require.Contains(t, reason, "ollama at "+c.ollama.URL)
	// Hold the outage to its end, checking /health stays 503 throughout.
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	end := time.After(time.Until(outageEnds))
hold:
	for {
		s, _ := c.health()
		require.Equal(t, http.StatusServiceUnavailable, s)
		select {
		case <-end:
			break hold
		case <-tick.C:
		}
	}
	require.NoError(t, c.ollama.Restart())
	c.waitHealthy(60 * time.Second)
	okAfter := ty.ok.Load()
	require.Eventually(t, func() bool { return ty.ok.Load() > okAfter+5 }, 30*time.Second, 10*time.Millisecond)
	stop()
	waitTraffic()
	waitEvents()
	record(t, "Ollama down 30s", ty, ev, c.projects, c.settle(60*time.Second))
	for _, w := range c.workers {
		require.True(t, w.Alive(), "no crash loop: the workers stayed up")
	}
	require.True(t, c.api.Alive())
}

// 3. nats-server restarted on its file store: api and workers reconnect by
// themselves, accepted events complete, and an event lost outright (the
// power-loss case of a 10 s sync interval) is healed by the reconcile.
func natsRestart(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	ctx, stop := context.WithCancel(context.Background())
	ty, waitTraffic := c.traffic(ctx, 3)
	ev, waitEvents := c.events(ctx, 50*time.Millisecond)
	require.Eventually(t, func() bool { return ty.ok.Load() > 5 && ev.sent.Load() > 5 }, 30*time.Second, 10*time.Millisecond)

	c.nats.Signal(syscall.SIGTERM)
	exitCode(t, c.nats, 30*time.Second)
	require.Eventually(t, func() bool { s, _ := c.health(); return s == http.StatusServiceUnavailable }, 10*time.Second, 20*time.Millisecond)
	c.startNATS()
	c.waitHealthy(60 * time.Second)
	okAfter := ty.ok.Load()
	require.Eventually(t, func() bool { return ty.ok.Load() > okAfter+10 }, 30*time.Second, 10*time.Millisecond, "traffic resumes")

	// A lost event: the row changes, the event is stored, then lost.
	stop()
	waitTraffic()
	waitEvents()
	_, err := c.raw.Exec("UPDATE waywo_projects SET title = 'Renamed after the restart' WHERE id = 1")
	require.NoError(t, err)
	s, err := c.admin.Stream(context.Background(), "WAYWO_PROJECTS")
	require.NoError(t, err)
	require.NoError(t, s.Purge(context.Background()))
	record(t, "nats-server restart", ty, ev, c.projects, c.settle(60*time.Second))
	for _, p := range append(c.workers, c.api) {
		require.True(t, p.Alive(), "%s reconnected by itself", p.Name)
	}
}

// 4. The WAYWO file write-locked by another process for 5 s: the sync's
// writes wait and retry, nothing is lost, /embed keeps answering.
func sqliteLocked(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	ctx, stop := context.WithCancel(context.Background())
	ty, waitTraffic := c.traffic(ctx, 2)
	require.Eventually(t, func() bool { return ty.ok.Load() > 5 }, 30*time.Second, 10*time.Millisecond)
	require.Zero(t, c.settle(60*time.Second), "the start-up reconcile embedded every project")

	// The backend changes five projects, then another process locks the
	// file and the five events arrive while it is locked.
	for id := 1; id <= 5; id++ {
		_, err := c.raw.Exec("UPDATE waywo_projects SET description = ? WHERE id = ?", ollamatest.Sentence(uint64(500+id), 10), id)
		require.NoError(t, err)
	}
	self, err := os.Executable()
	require.NoError(t, err)
	lock := startProc(t, c.dir, self, "sqlite-locker", map[string]string{"FAULTS_LOCK_DB": c.dbPath})
	require.Eventually(t, func() bool { return strings.Contains(lock.Tail(3000), "locked") }, 10*time.Second, 5*time.Millisecond)
	lockedAt := time.Now()
	okAtLock := ty.ok.Load()
	ev := &events{}
	for id := 1; id <= 5; id++ {
		_, err := c.js.Publish(context.Background(), fmt.Sprintf("waywo.projects.changed.%d", id), nil)
		require.NoError(t, err)
		ev.sent.Add(1)
	}
	// The lock stays 5 s, and /embed keeps answering meanwhile.
	require.Eventually(t, func() bool { return time.Since(lockedAt) >= 5*time.Second && ty.ok.Load() > okAtLock }, 30*time.Second, 10*time.Millisecond,
		"/embed kept answering while the file was locked")
	_, err = lock.Stdin().Write([]byte("release\n"))
	require.NoError(t, err)
	require.Zero(t, exitCode(t, lock, 30*time.Second), lock.Tail(3000))
	stop()
	waitTraffic()
	record(t, "SQLite locked 5s", ty, ev, c.projects, c.settle(60*time.Second))
}

// 5. SIGTERM to a worker and then to the api under load: batches in flight
// finish and are acked, requests in flight are answered.
func sigterm(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	ctx, stop := context.WithCancel(context.Background())
	// Clients that send again, once, a request whose connection closed
	// unanswered, as embedclient does: at the api's stop the kernel resets
	// connections it accepted that the api had not read yet.
	ty, waitTraffic := c.trafficOf(ctx, 6, &tally{resend: true})
	ev, waitEvents := c.events(ctx, 50*time.Millisecond)
	require.Eventually(t, func() bool { return ty.ok.Load() > 5 && c.ackPending() > 0 }, 30*time.Second, 5*time.Millisecond)
	c.workers[0].Signal(syscall.SIGTERM)
	require.Zero(t, exitCode(t, c.workers[0], 30*time.Second), "the worker exits cleanly")
	require.Contains(t, c.workers[0].Tail(3000), "worker stopped")

	okBefore := ty.ok.Load()
	require.Eventually(t, func() bool { return ty.ok.Load() > okBefore+10 && c.ackPending() > 0 }, 30*time.Second, 5*time.Millisecond)
	c.api.Signal(syscall.SIGTERM)
	require.Zero(t, exitCode(t, c.api, 40*time.Second), "the api exits cleanly")
	// Requests in flight at the SIGTERM were answered (none hung); new ones
	// find no api until it is back.
	c.startAPI()
	c.waitHealthy(60 * time.Second)
	stop()
	waitTraffic()
	waitEvents()
	record(t, "SIGTERM worker, then api", ty, ev, c.projects, c.settle(60*time.Second),
		fmt.Sprintf("%d requests whose connection the stopping api's kernel reset unread were sent again, once", ty.resent.Load()))
}

// 6. A slow Ollama: requests end with 504 at EMBED_REQUEST_TIMEOUT, and the
// late replies are dropped without harm.
func slowOllama(t *testing.T) {
	proxyURL, delay := slowProxy(t)
	c := newCluster(t, clusterOptions{ollamaURL: proxyURL, requestTimeout: 2 * time.Second})

	hc := &http.Client{Timeout: 30 * time.Second}
	delay.Store(int64(4 * time.Second))
	slow := &tally{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			start := time.Now()
			resp, err := hc.Post(c.apiURL+"/embed", "application/json", strings.NewReader(`{"documents":["slow one"]}`))
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			slow.sent.Add(1)
			took := time.Since(start)
			if resp.StatusCode == http.StatusGatewayTimeout && took < 3*time.Second {
				slow.refused.Add(1)
			} else {
				slow.wrong.Add(1)
				slow.note(fmt.Sprintf("%d after %s: %s", resp.StatusCode, took, body))
			}
		})
	}
	wg.Wait()
	require.Equal(t, int64(4), slow.refused.Load(), "%v", slow.reasons)

	// The late replies arrive at an api that no longer waits; it carries on.
	delay.Store(0)
	ty, ev := c.steady(2, 20, 10, 60*time.Second)
	ty.sent.Add(slow.sent.Load())
	ty.refused.Add(slow.refused.Load())
	record(t, "slow Ollama", ty, ev, c.projects, c.settle(60*time.Second))
	require.True(t, c.api.Alive())
}
