// One pipeline row: the api and workers as processes, clients, their figures.

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/waywo/embed/internal/proctest"
	"github.com/waywo/embed/internal/wire"
)

// pipelineRow starts an api (embedded NATS, no worker of its own) and one
// worker process per backend list, drives it, and stops it.
func (b *bench) pipelineRow(name string, clients, docsPer int, d time.Duration, model string, dims int, backends [][]string) (row, error) {
	ctx, work, c := b.ctx, b.work, b.c
	httpAddr, err := proctest.FreeAddr()
	if err != nil {
		return row{}, err
	}
	natsAddr, err := proctest.FreeAddr()
	if err != nil {
		return row{}, err
	}
	common := map[string]string{
		"EMBED_MODEL": model, "EMBED_DIMENSIONS": strconv.Itoa(dims), "EMBED_LOG_LEVEL": "warn",
		"EMBED_HEARTBEAT_INTERVAL": "500ms",
	}
	roles := proctest.NewRoles()
	apiEnv := proctest.With(map[string]string{
		"EMBED_HTTP_ADDR": httpAddr, "EMBED_NATS_ADDR": natsAddr, "EMBED_WORKER": "off",
		"EMBED_DATA_DIR":   mkdir(work, "data-"+strconv.FormatInt(time.Now().UnixNano(), 36)),
		"EMBED_CACHE_SIZE": "0", // measure the pipeline, not the cache
		"EMBED_SYNC":       "false",
	}, common, roles.Embedded())
	var pprofAddrs []string // api first, then the first worker
	if profile {
		for range 2 {
			a, err := proctest.FreeAddr()
			if err != nil {
				return row{}, err
			}
			pprofAddrs = append(pprofAddrs, a)
		}
		apiEnv["EMBED_PPROF_ADDR"] = pprofAddrs[0]
	}
	api, err := startProc(work, "api", name+"-api", apiEnv)
	if err != nil {
		return row{}, err
	}
	defer api.Stop(20 * time.Second)
	var workers []*proctest.Process
	defer func() {
		for _, w := range workers {
			w.Stop(20 * time.Second)
		}
	}()
	base := "http://" + httpAddr
	if err := waitUp(ctx, base); err != nil {
		return row{}, err
	}
	var metricsAddrs []string
	for i, hosts := range backends {
		maddr, err := proctest.FreeAddr()
		if err != nil {
			return row{}, err
		}
		metricsAddrs = append(metricsAddrs, maddr)
		env := proctest.With(map[string]string{
			"NATS_URL": "nats://" + natsAddr, "OLLAMA_HOST": hosts[0], "EMBED_OLLAMA_HOSTS": strings.Join(hosts, ","),
			"EMBED_METRICS_ADDR": maddr, "EMBED_WORKER_ID": "bench-w" + strconv.Itoa(i),
		}, common, roles.As(wire.RoleWorker))
		if profile && i == 0 {
			env["EMBED_PPROF_ADDR"] = pprofAddrs[1]
		}
		if b.hostCalls != "" {
			env["EMBED_CALLS_PER_HOST"] = b.hostCalls
		}
		maps.Copy(env, b.workerEnv)
		w, err := startProc(work, "worker", name+"-worker-"+strconv.Itoa(i), env)
		if err != nil {
			return row{}, err
		}
		workers = append(workers, w)
	}
	if err := waitWorkers(ctx, base, len(backends)); err != nil {
		return row{}, err
	}
	apiBefore := api.Usage()
	var wBefore []proctest.Usage
	for _, w := range workers {
		wBefore = append(wBefore, w.Usage())
	}
	var profiles sync.WaitGroup
	for i, a := range pprofAddrs {
		who := []string{"api", "worker-0"}[i]
		profiles.Go(func() {
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", a, max(1, int(d.Seconds())))
			saveMetrics(url, filepath.Join(work, name+"-"+who+".pprof"))
		})
	}
	stopSelf := func() {}
	if profile {
		// The benchmark's own clients and fake backend share the cores with
		// the api and workers; their cost is part of the picture.
		if stopSelf, err = profileSelf(filepath.Join(work, name+"-bench.pprof")); err != nil {
			return row{}, err
		}
	}
	s := drive(ctx, c, clients, docsPer, d, pipelineCall(base))
	stopSelf()
	profiles.Wait()
	apiAfter := api.Usage()
	wu := proctest.Usage{}
	for i, w := range workers {
		u := w.Usage()
		wu.CPUSeconds += u.CPUSeconds - wBefore[i].CPUSeconds
		wu.PeakRSSMB = max(wu.PeakRSSMB, u.PeakRSSMB)
	}
	au := proctest.Usage{CPUSeconds: apiAfter.CPUSeconds - apiBefore.CPUSeconds, PeakRSSMB: apiAfter.PeakRSSMB}
	for i, maddr := range metricsAddrs {
		saveMetrics("http://"+maddr+"/metrics", filepath.Join(work, fmt.Sprintf("%s-worker-%d.metrics", name, i)))
	}
	saveMetrics(base+"/metrics", filepath.Join(work, name+"-api.metrics"))
	return row{Sample: s, API: &au, Workers: &wu}, nil
}

func waitUp(ctx context.Context, base string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(base + "/health"); err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("api at %s did not start", base)
}

// saveMetrics keeps a scrape for reading after the run (batch sizes, flush
// reasons, model call latency).
func saveMetrics(url, path string) {
	resp, err := http.Get(url)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
}

func jsonDecode(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

func mkdir(parent, name string) string {
	p := filepath.Join(parent, name)
	_ = os.MkdirAll(p, 0o755)
	return p
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func maxRSS(rows []row) float64 {
	m := 0.0
	for _, r := range rows {
		if r.API != nil {
			m = max(m, r.API.PeakRSSMB)
		}
	}
	return m
}
