// Command bench measures the pipeline side by side with its backend in one
// run: direct Ollama calls, the original service's pattern, the pipeline
// through POST /embed at several concurrencies (api and worker as separate
// processes, their CPU and peak RSS read from /proc), the transport alone
// against a zero-cost backend, scale-out over workers, and one worker
// driving several Ollamas. It prints a table and writes bench.json and
// bench.png to -out.
//
//	go run ./cmd/bench [-duration 4s] [-out bench-out]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/proctest"
)

type row struct {
	Group    string          `json:"group"`
	Scenario string          `json:"scenario"`
	Sample   sample          `json:"sample"`
	API      *proctest.Usage `json:"api,omitempty"`
	Workers  *proctest.Usage `json:"workers,omitempty"`
	Ratio    float64         `json:"ratio,omitempty"`
}

type report struct {
	Date     time.Time          `json:"date"`
	CPUs     int                `json:"cpus"`
	Duration time.Duration      `json:"duration_per_level_ns"`
	Rows     []row              `json:"rows"`
	Targets  []target           `json:"targets"`
	Notes    []string           `json:"notes"`
	Extra    map[string]float64 `json:"extra"`
}

type target struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Want  string  `json:"want"`
	Met   bool    `json:"met"`
}

func main() {
	dur := flag.Duration("duration", 6*time.Second, "measuring time per load level (after a 0.3 s warm-up); levels on the real model run twice as long")
	out := flag.String("out", "bench-out", "directory for bench.json, bench.png and process logs")
	flag.BoolVar(&profile, "pprof", false, "take a CPU profile of the api and the first worker during every pipeline level (in -out/work)")
	flag.StringVar(&only, "only", "", "run only these groups, comma separated: direct, pipeline, alternating, transport, scale-out, runners, reindex, lanes, search, engines")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dur, *out); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var (
	only    string
	profile bool
)

// want says whether a group runs in this invocation.
func want(group string) bool {
	if only == "" {
		return true
	}
	for _, g := range strings.Split(only, ",") {
		if strings.TrimSpace(g) == group {
			return true
		}
	}
	return false
}

const (
	bigDims   = 4096
	fakeModel = "fake-4096"
)

func run(ctx context.Context, d time.Duration, out string) error {
	work := mkdir(out, "work")
	fmt.Println("building api and worker…")
	if err := proctest.BuildBinaries(work); err != nil {
		return err
	}
	// One thread per Ollama: two Ollamas of llama.cpp's default threads on
	// two cores spin against each other and run ten times slower.
	fmt.Println("starting two Ollama servers with the tiny model (num_thread 1 each)…")
	ollA, err := ollamatest.StartServer(mkdir(work, "ollama-a"), "PARAMETER num_thread 1")
	if err != nil {
		return err
	}
	defer ollA.Stop()
	ollB, err := ollamatest.StartServer(mkdir(work, "ollama-b"), "PARAMETER num_thread 1")
	if err != nil {
		return err
	}
	defer ollB.Stop()

	texts := make([]string, 50_000)
	for i := range texts {
		texts[i] = ollamatest.Sentence(uint64(i), 40)
	}
	b := &bench{ctx: ctx, work: work, d: d, c: &corpus{texts: texts}, ollA: ollA, ollB: ollB,
		rep: &report{Date: time.Now().UTC(), CPUs: runtime.NumCPU(), Duration: d, Extra: map[string]float64{}}}
	for _, g := range []struct {
		name string
		fn   func() error
	}{
		{"direct", b.direct},
		{"pipeline", b.pipeline},
		{"alternating", b.alternating},
		{"transport", b.transport},
		{"scale-out", b.scaleOut},
		{"runners", b.runners},
		{"reindex", b.reindex},
		{"lanes", b.lanes},
		{"search", b.search},
		{"engines", b.engines},
	} {
		if want(g.name) {
			if err := g.fn(); err != nil {
				return fmt.Errorf("%s: %w", g.name, err)
			}
		}
	}
	b.targets()
	fmt.Println("\ntargets (ratios from this run):")
	for _, t := range b.rep.Targets {
		mark := "MET "
		if !t.Met {
			mark = "MISS"
		}
		fmt.Printf("  %s %-48s %9.3f  (want %s)\n", mark, t.Name, t.Value, t.Want)
	}
	for _, n := range b.rep.Notes {
		fmt.Println("  note:", n)
	}
	js, _ := json.MarshalIndent(b.rep, "", "  ")
	if err := os.WriteFile(filepath.Join(out, "bench.json"), js, 0o644); err != nil {
		return err
	}
	fmt.Printf("\nwrote %s", filepath.Join(out, "bench.json"))
	if len(b.pipe) > 0 && len(b.trans) > 0 {
		if err := chart(filepath.Join(out, "bench.png"), b.pipe, b.trans, b.ceiling); err != nil {
			return err
		}
		fmt.Printf(" and %s", filepath.Join(out, "bench.png"))
	}
	fmt.Printf("; process logs and worker metrics in %s\n", work)
	return nil
}

type bench struct {
	ctx        context.Context
	work       string
	d          time.Duration
	c          *corpus
	ollA, ollB *ollamatest.Server
	rep        *report

	serial, ceiling float64
	serialP50       time.Duration
	pipe, trans     []row
	trans8          row
	trans2          []row // EMBED_CALLS_PER_HOST=2: 1 and 8 docs per request
	scale, runs     []row
	altRatio        float64
	altP50Diff      float64           // ms
	hostCalls       string            // EMBED_CALLS_PER_HOST for the workers, when set
	workerEnv       map[string]string // more settings for the workers, when set
	engineRuns      []engineRun

	reindexDone           bool
	reindexUnchangedCalls int
	laneTargets           []target
	searches              []searchRun
}

func (b *bench) add(r row) {
	b.rep.Rows = append(b.rep.Rows, r)
	s := r.Sample
	fmt.Printf("  %-12s %-44s %8.1f docs/s  p50 %7.2fms  p99 %7.2fms  errors %d",
		r.Group, r.Scenario, s.DocsPerS, ms(s.P50), ms(s.P99), s.Errors)
	if r.API != nil {
		fmt.Printf("  api %.1f cpu-s %.0f MB  workers %.1f cpu-s %.0f MB", r.API.CPUSeconds, r.API.PeakRSSMB, r.Workers.CPUSeconds, r.Workers.PeakRSSMB)
	}
	fmt.Println()
}

func (b *bench) direct() error {
	fmt.Println("backend ceiling: direct Ollama calls")
	a, d := b.ollA, 2*b.d
	serial := drive(b.ctx, b.c, 1, 1, d, directCall(a.URL, a.Model, nil))
	b.add(row{Group: "direct", Scenario: "serial, 1 doc per call", Sample: serial})
	batched := drive(b.ctx, b.c, 1, 32, d, directCall(a.URL, a.Model, nil))
	b.add(row{Group: "direct", Scenario: "batched, 32 docs per call", Sample: batched})
	conc := drive(b.ctx, b.c, 16, 1, d, directCall(a.URL, a.Model, nil))
	b.add(row{Group: "direct", Scenario: "16 concurrent callers, 1 doc per call", Sample: conc})
	b.serial, b.serialP50 = serial.DocsPerS, serial.P50
	b.ceiling = max(serial.DocsPerS, batched.DocsPerS, conc.DocsPerS)
	b.rep.Extra["backend_ceiling_docs_per_s"] = b.ceiling
	var lock sync.Mutex
	old := drive(b.ctx, b.c, 64, 1, d, directCall(a.URL, a.Model, &lock))
	b.add(row{Group: "old service", Scenario: "64 clients, serialised, 1 doc per request", Sample: old, Ratio: old.DocsPerS / b.ceiling})
	return nil
}

func (b *bench) pipeline() error {
	fmt.Println("pipeline: POST /embed, api and one worker as processes, real Ollama")
	for _, clients := range []int{1, 16, 64} {
		r, err := b.pipelineRow("pipeline-"+strconv.Itoa(clients), clients, 1, 2*b.d, b.ollA.Model, b.ollA.Dims, [][]string{{b.ollA.URL}})
		if err != nil {
			return err
		}
		r.Group, r.Scenario = "pipeline", fmt.Sprintf("%d clients, 1 doc per request", clients)
		if b.ceiling > 0 {
			r.Ratio = r.Sample.DocsPerS / b.ceiling
		}
		b.add(r)
		b.pipe = append(b.pipe, r)
	}
	return nil
}

// alternating answers the headline questions on a noisy shared machine:
// direct Ollama and the pipeline in turn, three times — serial calls
// against one client for the latency, 16 concurrent callers against 64
// clients for the throughput — and compares the medians.
func (b *bench) alternating() error {
	fmt.Println("alternating: direct and pipeline in turn, three rounds: 1 caller vs 1 client, 16 callers vs 64 clients")
	a := b.ollA
	var direct, pipe, directP50, pipeP50 []float64
	for round := range 3 {
		s1 := drive(b.ctx, b.c, 1, 1, b.d, directCall(a.URL, a.Model, nil))
		b.add(row{Group: "alternating", Scenario: fmt.Sprintf("round %d: direct, serial", round+1), Sample: s1})
		directP50 = append(directP50, ms(s1.P50))
		r1, err := b.pipelineRow(fmt.Sprintf("alternating-1c-%d", round+1), 1, 1, b.d, a.Model, a.Dims, [][]string{{a.URL}})
		if err != nil {
			return err
		}
		r1.Group, r1.Scenario = "alternating", fmt.Sprintf("round %d: pipeline, 1 client", round+1)
		b.add(r1)
		pipeP50 = append(pipeP50, ms(r1.Sample.P50))

		s := drive(b.ctx, b.c, 16, 1, 2*b.d, directCall(a.URL, a.Model, nil))
		b.add(row{Group: "alternating", Scenario: fmt.Sprintf("round %d: direct, 16 callers", round+1), Sample: s})
		direct = append(direct, s.DocsPerS)
		r, err := b.pipelineRow(fmt.Sprintf("alternating-%d", round+1), 64, 1, 2*b.d, a.Model, a.Dims, [][]string{{a.URL}})
		if err != nil {
			return err
		}
		r.Group, r.Scenario = "alternating", fmt.Sprintf("round %d: pipeline, 64 clients", round+1)
		b.add(r)
		pipe = append(pipe, r.Sample.DocsPerS)
	}
	b.altRatio = median(pipe) / median(direct)
	b.altP50Diff = median(pipeP50) - median(directP50)
	b.rep.Extra["alternating_direct_median_docs_per_s"] = median(direct)
	b.rep.Extra["alternating_pipeline_median_docs_per_s"] = median(pipe)
	b.rep.Extra["alternating_direct_serial_median_p50_ms"] = median(directP50)
	b.rep.Extra["alternating_pipeline_1_client_median_p50_ms"] = median(pipeP50)
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func (b *bench) transport() error {
	fmt.Println("transport ceiling: the same against a zero-cost backend of 4096-d vectors")
	fake, err := ollamatest.StartFake(fakeModel, bigDims, 0)
	if err != nil {
		return err
	}
	defer fake.Stop()
	for _, clients := range []int{1, 16, 64} {
		r, err := b.pipelineRow("transport-"+strconv.Itoa(clients), clients, 1, b.d, fakeModel, bigDims, [][]string{{fake.URL}})
		if err != nil {
			return err
		}
		r.Group, r.Scenario = "transport", fmt.Sprintf("%d clients, 4096-d, zero-cost backend", clients)
		b.add(r)
		b.trans = append(b.trans, r)
	}
	// The same load in requests of 8 documents, as a sync or reindex sends.
	r, err := b.pipelineRow("transport-64x8", 64, 8, b.d, fakeModel, bigDims, [][]string{{fake.URL}})
	if err != nil {
		return err
	}
	r.Group, r.Scenario = "transport", "64 clients x 8 docs per request, 4096-d"
	b.add(r)
	b.trans8 = r
	// The same two loads with a second full batch queued per Ollama.
	b.hostCalls = "2"
	defer func() { b.hostCalls = "" }()
	for _, docs := range []int{1, 8} {
		r, err := b.pipelineRow(fmt.Sprintf("transport-64x%d-2calls", docs), 64, docs, b.d, fakeModel, bigDims, [][]string{{fake.URL}})
		if err != nil {
			return err
		}
		r.Group, r.Scenario = "transport", fmt.Sprintf("64 clients x %d docs, EMBED_CALLS_PER_HOST=2", docs)
		b.add(r)
		b.trans2 = append(b.trans2, r)
	}
	b.rep.Extra["transport_64_2calls_over_1call"] = b.trans2[0].Sample.DocsPerS / b.trans[2].Sample.DocsPerS
	b.rep.Extra["transport_64x8_2calls_over_1call"] = b.trans2[1].Sample.DocsPerS / b.trans8.Sample.DocsPerS
	return nil
}

// scaleOut models GPU runners: each worker's backend spends perInput per
// input, one at a time, and little CPU, so the ratio shows the pipeline's
// scheduling rather than this machine's two cores.
func (b *bench) scaleOut() error {
	const perInput = 10 * time.Millisecond
	fmt.Printf("scale-out: N workers, each with a runner that spends %s per input, one at a time\n", perInput)
	for _, n := range []int{1, 2, 4} {
		var backends [][]string
		for range n {
			f, err := ollamatest.StartFake(fakeModel, 384, perInput)
			if err != nil {
				return err
			}
			defer f.Stop()
			backends = append(backends, []string{f.URL})
		}
		r, err := b.pipelineRow(fmt.Sprintf("scale-%d", n), 64, 1, b.d, fakeModel, 384, backends)
		if err != nil {
			return err
		}
		r.Group, r.Scenario = "scale-out", fmt.Sprintf("%d worker(s), 64 clients, 384-d", n)
		r.Ratio = 1
		if len(b.scale) > 0 {
			r.Ratio = r.Sample.DocsPerS / b.scale[0].Sample.DocsPerS
		}
		b.add(r)
		b.scale = append(b.scale, r)
	}
	return nil
}

func (b *bench) runners() error {
	fmt.Println("runners: one worker driving one, then two real Ollama processes (EMBED_OLLAMA_HOSTS)")
	a, o := b.ollA, b.ollB
	one, err := b.pipelineRow("runners-1", 64, 1, 2*b.d, a.Model, a.Dims, [][]string{{a.URL}})
	if err != nil {
		return err
	}
	one.Group, one.Scenario, one.Ratio = "runners", "1 worker, 1 Ollama, 64 clients", 1
	b.add(one)
	two, err := b.pipelineRow("runners-2", 64, 1, 2*b.d, a.Model, a.Dims, [][]string{{a.URL, o.URL}})
	if err != nil {
		return err
	}
	two.Group, two.Scenario, two.Ratio = "runners", "1 worker, 2 Ollamas, 64 clients", two.Sample.DocsPerS/one.Sample.DocsPerS
	b.add(two)
	b.runs = []row{one, two}
	return nil
}

func (b *bench) targets() {
	add := func(name string, v float64, wantS string, met bool) {
		b.rep.Targets = append(b.rep.Targets, target{Name: name, Value: v, Want: wantS, Met: met})
	}
	b.rep.Targets = append(b.rep.Targets, b.laneTargets...)
	if b.altRatio > 0 {
		add("pipeline at 64 clients / direct, medians of 3 alternating rounds", b.altRatio, ">= 0.95", b.altRatio >= 0.95)
		add("p50 at 1 client minus direct serial p50 (ms), medians of 3 alternating rounds", b.altP50Diff, "<= 2", b.altP50Diff <= 2)
	}
	if len(b.pipe) > 0 && b.ceiling > 0 {
		r := b.pipe[2].Sample.DocsPerS / b.ceiling
		add("pipeline at 64 clients / best direct pattern, single rounds", r, ">= 0.95", r >= 0.95)
		dp := ms(b.pipe[0].Sample.P50) - ms(b.serialP50)
		add("p50 at 1 client minus direct serial p50 (ms), single rounds", dp, "<= 2", dp <= 2)
	}
	if len(b.trans) > 0 {
		add("transport docs/s at 64 clients (4096-d)", b.trans[2].Sample.DocsPerS, ">= 3000", b.trans[2].Sample.DocsPerS >= 3000)
		add("transport docs/s at 64 clients x 8 docs (4096-d)", b.trans8.Sample.DocsPerS, ">= 3000", b.trans8.Sample.DocsPerS >= 3000)
		rss := maxRSS(append(append(slices.Clone(b.trans), b.trans8), b.trans2...)) // the 8-docs rows hold the most in flight
		add("api peak RSS in transport runs (MB)", rss, "< 80", rss < 80)
	}
	if len(b.scale) > 0 {
		add("scale-out 2 workers / 1", b.scale[1].Ratio, ">= 1.8", b.scale[1].Ratio >= 1.8)
		add("scale-out 4 workers / 1", b.scale[2].Ratio, ">= 3.6", b.scale[2].Ratio >= 3.6)
	}
	if len(b.runs) > 0 {
		add("one worker, 2 Ollamas / 1 Ollama", b.runs[1].Ratio, "> 1", b.runs[1].Ratio > 1)
	}
	b.searchTargets(add)
	b.engineTargets(add)
	if b.reindexDone {
		add("reindex of 1,000 unchanged projects: model calls", float64(b.reindexUnchangedCalls), "= 0", b.reindexUnchangedCalls == 0)
	}
}
