// What the soak watches while it runs: every process's goroutines,
// memory and log volume, and every row's vector.

package faults

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/proctest"
	"github.com/waywo/embed/internal/prompt"
	"github.com/waywo/embed/internal/vector"
)

// sample is one process's goroutines and resident memory at a moment.
type sample struct {
	at         time.Duration // after the soak's start
	goroutines int           // -1 when it could not be read (the process down)
	rssMB      float64
}

// watched is one of the soak's long-lived processes, as it is now (a
// restarted one is its new process), and how to count its goroutines.
type watched struct {
	proc       *proctest.Process
	goroutines func() int
}

func (s *soak) processes() map[string]watched {
	c := s.c
	out := map[string]watched{"api": {c.api, func() int { return metricGoroutines(c.apiURL + "/metrics") }}}
	for i, w := range c.workers {
		addr := c.wenv[i]["EMBED_METRICS_ADDR"]
		out[fmt.Sprintf("worker%d", i+1)] = watched{w, func() int { return metricGoroutines("http://" + addr + "/metrics") }}
	}
	for _, n := range c.nodes {
		port := n.profPort
		out["nats-"+n.name] = watched{n.proc, func() int { return profGoroutines(port) }}
	}
	return out
}

// watchResources samples every process every 5 s until ctx ends.
func (s *soak) watchResources(ctx context.Context, start time.Time) (wait func()) {
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			s.mu.Lock()
			procs := s.processes()
			s.mu.Unlock()
			for name, p := range procs {
				smp := sample{at: time.Since(start), goroutines: -1}
				if p.proc.Alive() {
					smp.goroutines = p.goroutines()
					smp.rssMB = p.proc.Usage().RSSMB
				}
				s.mu.Lock()
				s.samples[name] = append(s.samples[name], smp)
				s.mu.Unlock()
			}
		}
	})
	return wg.Wait
}

func metricGoroutines(url string) int {
	hc := http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	return -1
}

// profGoroutines reads a nats-server's goroutine count from its Go
// profiles (prof_port): "goroutine profile: total N".
func profGoroutines(port int) int {
	hc := http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/goroutine?debug=1", port))
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "goroutine profile: total")))
	if err != nil {
		return -1
	}
	return n
}

// bound is what a process may use: at most Goroutines and RSSMB at any
// time, and in the last quarter of the soak no more than 1.5 times its
// peak of the second quarter plus a slack (a leak grows; load does not).
type bound struct {
	goroutines int
	rssMB      float64
}

var bounds = map[string]bound{"api": {2000, 512}, "worker": {500, 256}, "nats": {3000, 512}}

func boundOf(name string) bound {
	for prefix, b := range bounds {
		if strings.HasPrefix(name, prefix) {
			return b
		}
	}
	return bound{}
}

// usage is one process's figures over the soak.
type usage struct {
	name           string
	peakGoroutines int
	peakRSS        float64
	early, late    sample // peaks of the second and last quarters
	logBytes       int64
	logPerMinute   float64
	problems       []string
}

// usages checks every process against its bound and its log volume
// against logLimit bytes a minute.
func (s *soak) usages(length time.Duration, logLimit float64) []usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []usage
	var names []string
	for n := range s.samples {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		u := usage{name: name}
		b := boundOf(name)
		for _, smp := range s.samples[name] {
			u.peakGoroutines = max(u.peakGoroutines, smp.goroutines)
			u.peakRSS = max(u.peakRSS, smp.rssMB)
			switch {
			case smp.at >= length/4 && smp.at < length/2:
				u.early.goroutines, u.early.rssMB = max(u.early.goroutines, smp.goroutines), max(u.early.rssMB, smp.rssMB)
			case smp.at >= length*3/4:
				u.late.goroutines, u.late.rssMB = max(u.late.goroutines, smp.goroutines), max(u.late.rssMB, smp.rssMB)
			}
		}
		if u.peakGoroutines > b.goroutines {
			u.problems = append(u.problems, fmt.Sprintf("%d goroutines (bound %d)", u.peakGoroutines, b.goroutines))
		}
		if u.peakRSS > b.rssMB {
			u.problems = append(u.problems, fmt.Sprintf("RSS %.0f MB (bound %.0f)", u.peakRSS, b.rssMB))
		}
		if u.early.goroutines > 0 && float64(u.late.goroutines) > 1.5*float64(u.early.goroutines)+50 {
			u.problems = append(u.problems, fmt.Sprintf("goroutines grew from %d to %d", u.early.goroutines, u.late.goroutines))
		}
		if u.early.rssMB > 0 && u.late.rssMB > 1.5*u.early.rssMB+64 {
			u.problems = append(u.problems, fmt.Sprintf("RSS grew from %.0f to %.0f MB", u.early.rssMB, u.late.rssMB))
		}
		log := name + ".log"
		if strings.HasPrefix(name, "nats-") {
			log = "nats-server-" + strings.TrimPrefix(name, "nats-") + ".log"
		}
		if fi, err := os.Stat(filepath.Join(s.c.dir, log)); err == nil {
			u.logBytes = fi.Size()
			u.logPerMinute = float64(fi.Size()) / length.Minutes()
			if u.logPerMinute > logLimit {
				u.problems = append(u.problems, fmt.Sprintf("%.0f kB of log a minute (bound %.0f)", u.logPerMinute/1024, logLimit/1024))
			}
		}
		out = append(out, u)
	}
	return out
}

// watchRows checks every 10 s, until ctx ends, that each row's vector is
// the model's of a text that row has had (its latest, or an older one the
// sync has not caught up with yet): never another row's, never a mix.
// It returns the rows found holding something else.
func (s *soak) watchRows(ctx context.Context, ev *events) (wait func() []string) {
	var (
		wg      sync.WaitGroup
		foreign []string
	)
	wg.Go(func() {
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			foreign = append(foreign, s.checkRows(ctx, ev)...)
		}
	})
	return func() []string { wg.Wait(); return foreign }
}

func (s *soak) checkRows(ctx context.Context, ev *events) (foreign []string) {
	c := s.c
	rows, err := c.raw.QueryContext(ctx, "SELECT id, title, hashtags, description_embedding FROM waywo_projects WHERE description_embedding IS NOT NULL")
	if err != nil {
		return nil // locked by a fault, or the soak ends: the next round checks
	}
	type row struct {
		id          int
		title, tags string
		blob        []byte
	}
	var all []row
	for rows.Next() {
		var r row
		if rows.Scan(&r.id, &r.title, &r.tags, &r.blob) == nil {
			all = append(all, r)
		}
	}
	rows.Close()
	for _, r := range all {
		v, err := vector.Decode(r.blob, c.ollama.Dims)
		if err != nil {
			foreign = append(foreign, fmt.Sprintf("project %d: %v", r.id, err))
			continue
		}
		ev.mu.Lock()
		texts := append([]string{ollamatest.Sentence(uint64(r.id), 10)}, ev.texts[r.id]...)
		ev.mu.Unlock()
		found := false
		for i := len(texts) - 1; i >= 0 && !found; i-- {
			ref, err := s.ref(prompt.ProjectText(r.title, texts[i], []string{"faults"}))
			found = err == nil && ollamatest.Cosine(v, ref) >= 0.9999
		}
		if !found {
			foreign = append(foreign, fmt.Sprintf("project %d holds a vector of none of its %d texts", r.id, len(texts)))
		}
	}
	return foreign
}
