// The randomized fault soak: the whole system as processes under steady
// load while a seeded schedule injects overlapping faults.

package faults

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/proctest"
	"github.com/waywo/embed/internal/wire"
)

var (
	soakFor  = flag.Duration("soak", 0, "run TestSoak, the randomized fault soak, for this long (at least 1m); 0 skips it")
	soakSeed = flag.Uint64("soak.seed", 0, "TestSoak's seed; 0 draws one, which the test prints")
)

// soakSlack is how long past its timeout (EMBED_REQUEST_TIMEOUT, 10 s
// here) a request may go unanswered before it counts as hung.
const soakSlack = 10 * time.Second

// soakLogLimit is the log volume a process may write a minute.
const soakLogLimit = 1 << 20

// soak is one run: the system, its Ollamas, the disk one NATS node stores
// on, and what the watchers saw.
type soak struct {
	t         *testing.T
	ctx       context.Context
	c         *cluster
	ollamas   []*ollamatest.Server
	smallDisk string
	digests   []string // of the model in each worker's Ollama
	reindexes int

	mu      sync.Mutex
	samples map[string][]sample
	refs    map[string][]float32
}

// wait waits d, or less if the soak is cut short.
func (s *soak) wait(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.ctx.Done():
	case <-t.C:
	}
}

// ref is the model's vector of text, from the package's own Ollama (not
// one the soak stops).
func (s *soak) ref(text string) ([]float32, error) {
	s.mu.Lock()
	v, ok := s.refs[text]
	s.mu.Unlock()
	if ok {
		return v, nil
	}
	out, err := s.c.direct.EmbedAll(context.Background(), []string{text})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.refs[text] = out.Vectors[0]
	s.mu.Unlock()
	return out.Vectors[0], nil
}

// check says whether vecs are the model's vectors of docs.
func (s *soak) check(docs []string, vecs [][]float32) bool {
	for i, d := range docs {
		ref, err := s.ref(d)
		if err != nil || ollamatest.Cosine(ref, vecs[i]) < 0.9999 {
			return false
		}
	}
	return true
}

// TestSoak runs the system — a 3-node NATS cluster (one node's store on
// a disk that can be filled), the api, two workers each with its own
// Ollama, a WAYWO file the backend writes to — under steady load
// (interactive requests, bulk batches, project edits announced by events,
// a reindex now and then) for -soak, while the schedule drawn from
// -soak.seed injects overlapping faults. At the end: every request
// answered or refused within its timeout plus soakSlack, every answer the
// model's vectors of its texts, every row the model's vector of its
// latest text (no event JetStream acknowledged lost), no row ever holding
// a vector of a text it never had, and every process's goroutines, memory
// and log volume bounded. The same seed replays the same schedule.
func TestSoak(t *testing.T) {
	if *soakFor == 0 {
		t.Skip("the randomized fault soak runs with -soak=<duration> (docs/testing.md, \"The fault soak\")")
	}
	require.GreaterOrEqual(t, *soakFor, time.Minute, "a soak that short injects next to nothing")
	seed := *soakSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	length := *soakFor
	sh := soakShape{workers: 2, nodes: 3, smallDiskNode: 2}
	plan := newSchedule(seed, length, sh)
	t.Logf("soak seed %d, %s (replay: go test ./internal/faults -run '^TestSoak$' -v -soak=%s -soak.seed=%d); schedule:\n%s",
		seed, length, length, seed, plan)

	ollamatest.Exclusive(t)
	buildBinaries(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &soak{t: t, ctx: ctx, samples: map[string][]sample{}, refs: map[string][]float32{}}
	for _, name := range []string{"ollama-w1", "ollama-w2"} {
		dir := filepath.Join(t.TempDir(), name)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		ol, err := ollamatest.StartServer(dir, "PARAMETER num_thread 1")
		if err != nil {
			ollamatest.Unavailable(t, err)
		}
		t.Cleanup(ol.Stop)
		t.Cleanup(ol.Resume) // a stopped server cannot end
		s.ollamas = append(s.ollamas, ol)
		// Each Ollama creates the model anew: the same weights under a
		// digest of its own.
		s.digests = append(s.digests, ol.Endpoint(t, ollamatest.EndpointOptions{}).Fingerprint().Digest)
	}
	s.smallDisk = proctest.SmallDisk(t, "128m")
	s.c = newCluster(t, clusterOptions{
		natsNodes: 3, nodeStores: map[int]string{sh.smallDiskNode: s.smallDisk},
		ollamaURLs: []string{s.ollamas[0].URL, s.ollamas[1].URL},
		apiEnv:     map[string]string{"EMBED_STREAM_MAX_BYTES": "16777216"},
	})
	c := s.c

	// The load: three interactive clients and one of bulk batches, over a
	// pool of texts (their reference vectors are computed once), and the
	// backend changing a project every 100 ms.
	pool := make([]string, 400)
	for i := range pool {
		pool[i] = ollamatest.Sentence(uint64(1_000_000+i), 8)
	}
	start := time.Now()
	load, stopLoad := context.WithCancel(ctx)
	interactive, bulk := &tally{check: s.check, resend: true}, &tally{check: s.check, resend: true}
	hc := &http.Client{Timeout: c.opts.requestTimeout + soakSlack}
	var clients sync.WaitGroup
	for i := range 4 {
		clients.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			for load.Err() == nil {
				var wait time.Duration
				if i == 3 {
					docs := make([]string, 24)
					for j := range docs {
						docs[j] = pool[rng.IntN(len(pool))]
					}
					wait = max(c.embedAs(hc, bulk, docs, "bulk"), 500*time.Millisecond)
				} else {
					docs := make([]string, 1+rng.IntN(3))
					for j := range docs {
						docs[j] = pool[rng.IntN(len(pool))]
					}
					wait = c.embedAs(hc, interactive, docs, "")
				}
				if wait > 0 {
					select {
					case <-load.Done():
					case <-time.After(wait):
					}
				}
			}
		})
	}
	ev, waitEvents := c.events(load, 100*time.Millisecond)
	waitResources := s.watchResources(load, start)
	waitRows := s.watchRows(load, ev)

	done := s.inject(start, plan)
	s.wait(time.Until(start.Add(length)))
	stopLoad()
	clients.Wait()
	waitEvents()
	waitResources()
	foreign := waitRows()
	foreign = append(foreign, s.checkRows(context.Background(), ev)...)

	lost := c.unsettled(2 * time.Minute)
	var modelErrs []string
	var wrongModel int
	require.NoError(t, c.raw.QueryRow(`SELECT COUNT(*) FROM embed_sync_state s JOIN waywo_projects p ON p.id = s.project_id
		WHERE p.description_embedding IS NOT NULL AND (s.model IS NOT ? OR s.dims IS NOT ?)`, c.ollama.Model, c.ollama.Dims).Scan(&wrongModel))
	if wrongModel > 0 {
		modelErrs = append(modelErrs, fmt.Sprintf("%d rows of another model", wrongModel))
	}
	digests, err := c.raw.Query(`SELECT DISTINCT COALESCE(model_digest, '') FROM embed_sync_state`)
	require.NoError(t, err)
	for digests.Next() {
		var d string
		require.NoError(t, digests.Scan(&d))
		if !slices.Contains(s.digests, d) {
			modelErrs = append(modelErrs, fmt.Sprintf("rows computed by a model of digest %q, which no worker serves (%v)", d, s.digests))
		}
	}
	require.NoError(t, digests.Close())
	usages := s.usages(length, soakLogLimit)
	streams := append(s.streams(), s.serverComplaints()...)
	report := s.report(seed, length, done, interactive, bulk, ev, lost, foreign, usages) + "\n" + strings.Join(streams, "\n") + "\n"
	t.Log("\n" + report)
	if path := os.Getenv("SOAK_REPORT"); path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		require.NoError(t, err)
		_, err = f.WriteString(report + "\nschedule:\n" + plan.String() + "\n")
		require.NoError(t, err)
		require.NoError(t, f.Close())
	}

	for name, p := range s.processes() {
		require.True(t, p.proc.Alive(), "%s ended by itself:\n%s", name, p.proc.Tail(3000))
	}
	// A jobs stream's copy left behind (a nats-server whose disk filled
	// disables JetStream until restarted) is named by /health.
	if info, err := c.streamInfo(wire.JobsStream); err == nil && info.Cluster != nil {
		for _, r := range info.Cluster.Replicas {
			if r.Offline || !r.Current {
				require.Eventually(t, func() bool { return strings.Contains(c.degraded(), r.Name) }, 15*time.Second, 100*time.Millisecond,
					"/health does not name the jobs stream's copy on %s, which is not current", r.Name)
			}
		}
	}
	for _, ty := range []*tally{interactive, bulk} {
		require.Zero(t, ty.hung.Load(), "requests hung (%v)", ty.reasons)
		require.Zero(t, ty.wrong.Load(), "wrong answers (%v)", ty.reasons)
		require.Positive(t, ty.ok.Load())
	}
	require.Empty(t, lost, "projects without the vector of their latest text")
	require.Empty(t, foreign, "rows with a vector of no text they had")
	require.Empty(t, modelErrs)
	for _, u := range usages {
		require.Empty(t, u.problems, "%s is not bounded", u.name)
	}
}

// streams says where each stream's copies stand at the end: every copy
// current once the faults have healed.
func (s *soak) streams() []string {
	var out []string
	for _, name := range []string{wire.JobsStream, wire.BulkJobsStream, wire.ProjectsStream, wire.DeadLetterStream} {
		info, err := s.c.streamInfo(name)
		if err != nil {
			out = append(out, fmt.Sprintf("stream %s: %v", name, err))
			continue
		}
		line := fmt.Sprintf("stream %s: leader %s", name, info.Cluster.Leader)
		for _, r := range info.Cluster.Replicas {
			state := "current"
			switch {
			case r.Offline:
				state = "offline"
			case !r.Current:
				state = fmt.Sprintf("behind by %d", r.Lag)
			}
			line += fmt.Sprintf(", %s %s", r.Name, state)
		}
		out = append(out, line)
	}
	return out
}

// serverComplaints are the distinct errors and warnings the nats-servers
// logged (the routes' reconnect attempts aside), with counts: what a fault
// did to them.
func (s *soak) serverComplaints() []string {
	var out []string
	for _, n := range s.c.nodes {
		b, err := os.ReadFile(n.proc.LogPath())
		if err != nil {
			continue
		}
		counts := map[string]int{}
		var order []string
		for _, line := range strings.Split(string(b), "\n") {
			i := max(strings.Index(line, " [ERR] "), strings.Index(line, " [WRN] "))
			if i < 0 || strings.Contains(line, "connect to route") {
				continue
			}
			msg := line[i+1:]
			if len(msg) > 160 {
				msg = msg[:160]
			}
			if counts[msg] == 0 {
				order = append(order, msg)
			}
			counts[msg]++
		}
		for _, m := range order[:min(len(order), 12)] {
			out = append(out, fmt.Sprintf("%s: %dx %s", n.name, counts[m], m))
		}
	}
	return out
}

// report is the soak's table.
func (s *soak) report(seed uint64, length time.Duration, done []injected, interactive, bulk *tally, ev *events,
	lost []int, foreign []string, usages []usage) string {
	var b strings.Builder
	fmt.Fprintf(&b, "soak seed %d, %s\n\n", seed, length)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "fault\tinjected\tlongest\t")
	for _, k := range faultKinds {
		n, longest := 0, time.Duration(0)
		for _, d := range done {
			if d.Kind == k.kind {
				n++
				longest = max(longest, d.For)
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t\n", k.kind, n, longest.Round(100*time.Millisecond))
	}
	tw.Flush()
	var reindexes []string
	for _, d := range done {
		if d.Kind == runReindex {
			reindexes = append(reindexes, d.note)
		}
	}
	fmt.Fprintf(&b, "\nreindexes: %d (%s)\n\n", len(reindexes), strings.Join(reindexes, "; "))

	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "requests\tsent\tok\trefused\thung\twrong\t")
	for _, r := range []struct {
		name string
		ty   *tally
	}{{"interactive", interactive}, {"bulk (24 texts)", bulk}} {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t\n", r.name, r.ty.sent.Load(), r.ty.ok.Load(), r.ty.refused.Load(), r.ty.hung.Load(), r.ty.wrong.Load())
	}
	tw.Flush()
	for _, r := range []*tally{interactive, bulk} {
		r.mu.Lock()
		fmt.Fprintf(&b, "  outcomes: %v; slowest refusal %s; sent again after a connection closed unanswered: %d\n",
			r.reasons, r.slowestRefusalLocked().Round(time.Millisecond), r.resent.Load())
		r.mu.Unlock()
	}

	ev.mu.Lock()
	acked, embedded := 0, 0
	for id, n := range ev.acked {
		acked += n
		if !slices.Contains(lost, id) {
			embedded += n
		}
	}
	ev.mu.Unlock()
	fmt.Fprintf(&b, "\nevents acknowledged %d, embedded %d, lost %d; rows holding a vector of no text they had: %d\n\n",
		acked, embedded, acked-embedded, len(foreign))

	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "process\tpeak goroutines\t2nd/4th quarter\tpeak RSS MB\t2nd/4th quarter\tlog kB/min\t")
	for _, u := range usages {
		fmt.Fprintf(tw, "%s\t%d\t%d/%d\t%.0f\t%.0f/%.0f\t%.0f\t\n", u.name, u.peakGoroutines, u.early.goroutines, u.late.goroutines,
			u.peakRSS, u.early.rssMB, u.late.rssMB, u.logPerMinute/1024)
	}
	tw.Flush()
	return b.String()
}
