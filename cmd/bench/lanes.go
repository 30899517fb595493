// Lanes: what a reindex does to search queries, with two lanes and with one.

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/waywo/embed/embedclient"
	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/proctest"
	"github.com/waywo/embed/internal/wire"
)

const (
	laneProjects = 10_000
	lanePerInput = 5 * time.Millisecond // the stand-in backend: one input at a time
	laneClients  = 4
	// laneThink is a search client's mean pause between queries (drawn
	// from half to one and a half times it): a user types, reads, types
	// again. Back to back, four clients would take most of the
	// model and leave a reindex half its throughput whatever the queue did.
	laneThink = 200 * time.Millisecond
	// laneBatchSize is EMBED_BATCH_SIZE's default, which the worker runs
	// with: a full bulk batch.
	laneBatchSize = 32
)

// laneRun is one measured situation.
type laneRun struct {
	Name        string        `json:"name"`
	Queries     sample        `json:"queries"`
	ReindexTook time.Duration `json:"reindex_ns,omitempty"`
	ProjectsPS  float64       `json:"reindex_projects_per_s,omitempty"`
	ModelShare  float64       `json:"query_model_share,omitempty"` // of the model's time the queries used
	// RunnerBusy is the share of the reindex's wall time the stand-in's
	// runner spent on inputs; Calls the model calls it answered meanwhile.
	// The rest, divided by Calls, is what each call cost the runner in
	// waiting for the pipeline.
	RunnerBusy float64 `json:"runner_busy,omitempty"`
	Calls      int     `json:"model_calls,omitempty"`
}

// runnerUse fills r's runner figures from the stand-in's stats before and
// after it.
func (r *laneRun) runnerUse(before, after ollamatest.RunnerStats) {
	r.RunnerBusy = (after.Busy - before.Busy).Seconds() / r.ReindexTook.Seconds()
	r.Calls = after.Calls - before.Calls
}

// idlePerCall is how long the runner waited for the pipeline per call.
func (r laneRun) idlePerCall() time.Duration {
	if r.Calls == 0 {
		return 0
	}
	return time.Duration((1 - r.RunnerBusy) * float64(r.ReindexTook) / float64(r.Calls))
}

// lanes measures, side by side against the stand-in backend that spends
// 5 ms per input one at a time: search queries from 4 clients with nothing
// else running; a reindex of 10,000 projects alone; and the two together,
// with lanes and with EMBED_LANES=false.
func (b *bench) lanes() error {
	fmt.Printf("lanes: %d search clients (a query, then %s on average) and `api reindex --all` of %d projects, stand-in backend at %s per input\n",
		laneClients, laneThink, laneProjects, lanePerInput)
	fake, err := ollamatest.StartFake(fakeModel, bigDims, lanePerInput)
	if err != nil {
		return err
	}
	defer fake.Stop()
	dir := mkdir(b.work, "lanes-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	path := filepath.Join(dir, "waywo.db")
	if _, err := b.writeProjects(path, laneProjects); err != nil {
		return err
	}

	var runs []laneRun
	for _, lanes := range []bool{true, false} {
		sys, err := b.laneSystem(dir, fake.URL, lanes)
		if err != nil {
			return err
		}
		if lanes {
			idle := b.queries(sys.base, nil)
			runs = append(runs, laneRun{Name: "idle", Queries: idle})
			before := fake.Stats()
			took, err := b.laneReindex(sys, path, lanes)
			if err != nil {
				sys.stop()
				return err
			}
			r := laneRun{Name: "reindex alone", ReindexTook: took, ProjectsPS: laneProjects / took.Seconds()}
			r.runnerUse(before, fake.Stats())
			runs = append(runs, r)
		}
		done := make(chan struct{})
		var took time.Duration
		var rerr error
		before := fake.Stats()
		go func() { defer close(done); took, rerr = b.laneReindex(sys, path, lanes) }()
		q := b.queries(sys.base, done)
		<-done
		sys.stop()
		if rerr != nil {
			return rerr
		}
		name := "reindex + queries, lanes"
		if !lanes {
			name = "reindex + queries, lanes off"
		}
		share := float64(q.Requests) * lanePerInput.Seconds() / took.Seconds()
		r := laneRun{Name: name, Queries: q, ReindexTook: took, ProjectsPS: laneProjects / took.Seconds(), ModelShare: share}
		r.runnerUse(before, fake.Stats())
		runs = append(runs, r)
	}

	idle, alone := runs[0], runs[1]
	fmt.Printf("  %-30s %9s %9s %9s %14s %12s %14s\n", "", "p50", "p99", "queries", "reindex", "runner busy", "idle per call")
	for _, r := range runs {
		q := "-"
		if r.Queries.Requests > 0 {
			q = strconv.Itoa(r.Queries.Requests)
		}
		rx := "-"
		if r.ProjectsPS > 0 {
			rx = fmt.Sprintf("%.1f proj/s", r.ProjectsPS)
		}
		p50, p99 := "-", "-"
		if r.Queries.Requests > 0 {
			p50, p99 = fmt.Sprintf("%.1fms", ms(r.Queries.P50)), fmt.Sprintf("%.1fms", ms(r.Queries.P99))
		}
		busy, idle := "-", "-"
		if r.Calls > 0 {
			busy = fmt.Sprintf("%.3f", r.RunnerBusy)
			idle = fmt.Sprintf("%.1fms (%d)", ms(r.idlePerCall()), r.Calls)
		}
		fmt.Printf("  %-30s %9s %9s %9s %14s %12s %14s\n", r.Name, p50, p99, q, rx, busy, idle)
		b.rep.Rows = append(b.rep.Rows, row{Group: "lanes", Scenario: r.Name, Sample: r.Queries})
		key := "lanes_" + slug(r.Name)
		if r.Queries.Requests > 0 {
			b.rep.Extra[key+"_p50_ms"], b.rep.Extra[key+"_p99_ms"] = ms(r.Queries.P50), ms(r.Queries.P99)
		}
		if r.ProjectsPS > 0 {
			b.rep.Extra[key+"_projects_per_s"] = r.ProjectsPS
		}
		if r.ModelShare > 0 {
			b.rep.Extra[key+"_query_model_share"] = r.ModelShare
		}
		if r.Calls > 0 {
			b.rep.Extra[key+"_runner_busy"], b.rep.Extra[key+"_idle_ms_per_call"] = r.RunnerBusy, ms(r.idlePerCall())
		}
	}
	with, without := runs[2], runs[3]
	full := time.Duration(laneBatchSize) * lanePerInput
	short := time.Duration(wire.BulkJobDocuments) * lanePerInput
	b.rep.Extra["lanes_full_bulk_batch_ms"], b.rep.Extra["lanes_short_bulk_batch_ms"] = ms(full), ms(short)
	b.laneTargets = []target{
		{Name: "lanes: query p99 during reindex - idle p99 (ms)", Value: ms(with.Queries.P99 - idle.Queries.P99),
			Want: fmt.Sprintf("<= %.0f (one full bulk batch; a short one is %.0f)", ms(full), ms(short)),
			Met:  with.Queries.P99 <= idle.Queries.P99+full},
		{Name: "lanes: reindex throughput with queries / alone", Value: with.ProjectsPS / alone.ProjectsPS,
			Want: ">= 0.90", Met: with.ProjectsPS >= 0.9*alone.ProjectsPS},
		{Name: "lanes: the same, the queries' model time set aside", Value: with.ProjectsPS / (alone.ProjectsPS * (1 - with.ModelShare)),
			Want: ">= 0.90", Met: with.ProjectsPS >= 0.9*alone.ProjectsPS*(1-with.ModelShare)},
		{Name: "lanes off: query p99 during reindex / with lanes", Value: float64(without.Queries.P99) / float64(with.Queries.P99),
			Want: "> 1 (what lanes save)", Met: without.Queries.P99 > with.Queries.P99},
	}
	return laneChart(filepath.Join(filepath.Dir(b.work), "lanes.png"), runs)
}

func slug(s string) string {
	out := make([]byte, 0, len(s))
	for i := range len(s) {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			out = append(out, c)
		case len(out) > 0 && out[len(out)-1] != '_':
			out = append(out, '_')
		}
	}
	return string(out)
}

type laneSys struct {
	base, natsAddr string
	env            map[string]string
	stop           func()
}

// laneSystem starts an api (embedded NATS, no sync of its own) and one
// worker on the stand-in backend.
func (b *bench) laneSystem(dir, backend string, lanes bool) (*laneSys, error) {
	httpAddr, err := proctest.FreeAddr()
	if err != nil {
		return nil, err
	}
	natsAddr, err := proctest.FreeAddr()
	if err != nil {
		return nil, err
	}
	roles := proctest.NewRoles()
	// The api's commands (reindex) join it with the api role's password.
	common := proctest.With(map[string]string{
		"EMBED_MODEL": fakeModel, "EMBED_DIMENSIONS": strconv.Itoa(bigDims), "EMBED_LOG_LEVEL": "warn",
		"EMBED_HEARTBEAT_INTERVAL": "500ms", "EMBED_LANES": strconv.FormatBool(lanes),
	}, roles.Embedded())
	apiEnv := proctest.With(map[string]string{
		"EMBED_HTTP_ADDR": httpAddr, "EMBED_NATS_ADDR": natsAddr, "EMBED_WORKER": "off",
		"EMBED_DATA_DIR": mkdir(dir, "data-"+strconv.FormatBool(lanes)), "EMBED_CACHE_SIZE": "0", "EMBED_SYNC": "false",
	}, common)
	name := "lanes-" + strconv.FormatBool(lanes)
	api, err := startProc(b.work, "api", name+"-api", apiEnv)
	if err != nil {
		return nil, err
	}
	s := &laneSys{base: "http://" + httpAddr, natsAddr: natsAddr, env: common}
	if err := waitUp(b.ctx, s.base); err != nil {
		api.Stop(20 * time.Second)
		return nil, err
	}
	maddr, err := proctest.FreeAddr()
	if err != nil {
		api.Stop(20 * time.Second)
		return nil, err
	}
	wenv := proctest.With(map[string]string{"NATS_URL": "nats://" + natsAddr, "OLLAMA_HOST": backend, "EMBED_METRICS_ADDR": maddr, "EMBED_WORKER_ID": name},
		common, roles.As(wire.RoleWorker))
	w, err := startProc(b.work, "worker", name+"-worker", wenv)
	if err != nil {
		api.Stop(20 * time.Second)
		return nil, err
	}
	s.stop = func() {
		saveMetrics("http://"+maddr+"/metrics", filepath.Join(b.work, name+"-worker.metrics"))
		saveMetrics(s.base+"/metrics", filepath.Join(b.work, name+"-api.metrics"))
		w.Stop(20 * time.Second)
		api.Stop(20 * time.Second)
	}
	if err := waitWorkers(b.ctx, s.base, 1); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// laneReindex runs `api reindex --all` through the running system and
// returns how long it took.
func (b *bench) laneReindex(s *laneSys, path string, lanes bool) (time.Duration, error) {
	cmd := exec.CommandContext(b.ctx, filepath.Join(b.work, "api"), "reindex", "--all")
	cmd.Env = os.Environ()
	env := map[string]string{"WAYWO_DB": path, "EMBED_NATS_ADDR": s.natsAddr, "EMBED_DATA_DIR": filepath.Join(filepath.Dir(path), "reindex-data")}
	for k, v := range s.env {
		env[k] = v
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("api reindex --all (lanes %v): %w\n%s", lanes, err, out)
	}
	return time.Since(start), nil
}

// queries runs laneClients search clients, each a one-document query then
// a pause, for b.d or, with until set, until it closes.
func (b *bench) queries(base string, until <-chan struct{}) sample {
	c := embedclient.New(base, embedclient.WithRetries(1, 0), embedclient.WithHTTPClient(pooled()))
	query := func(ctx context.Context, docs []string) error {
		_, err := c.EmbedQueries(ctx, docs)
		return err
	}
	if until == nil {
		stop := make(chan struct{})
		t := time.AfterFunc(warmUp+b.d, func() { close(stop) })
		defer t.Stop()
		until = stop
	}
	return driveUntil(b.ctx, b.c, laneClients, 1, laneThink, until, query)
}

// laneChart draws query p50 and p99 for idle, reindex with lanes, and
// reindex with lanes off.
func laneChart(path string, runs []laneRun) error {
	p := plot.New()
	p.Title.Text = "Search queries during a reindex of 10,000 projects"
	p.Y.Label.Text = "query latency, ms"
	var names []string
	var p50, p99 plotter.Values
	for _, r := range runs {
		if r.Queries.Requests == 0 {
			continue
		}
		names = append(names, r.Name)
		p50 = append(p50, ms(r.Queries.P50))
		p99 = append(p99, ms(r.Queries.P99))
	}
	w := vg.Points(28)
	b50, err := plotter.NewBarChart(p50, w)
	if err != nil {
		return err
	}
	b99, err := plotter.NewBarChart(p99, w)
	if err != nil {
		return err
	}
	b50.Color, b99.Color = plotutil.Color(0), plotutil.Color(1)
	b50.Offset, b99.Offset = -w/2, w/2
	p.Add(b50, b99)
	p.Legend.Add("p50", b50)
	p.Legend.Add("p99", b99)
	p.Legend.Top, p.Legend.Left = true, true
	p.NominalX(names...)
	return p.Save(7*vg.Inch, 4*vg.Inch, path)
}
