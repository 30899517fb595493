package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/waywo/embed/internal/proctest"
)

// startProc starts one of the built binaries in dir, its log beside it.
func startProc(dir, bin, name string, env map[string]string) (*proctest.Process, error) {
	return proctest.Start(proctest.Spec{Name: name, Dir: dir, Bin: filepath.Join(dir, bin), Env: env})
}

// waitWorkers polls /health until it reports n ready workers.
func waitWorkers(ctx context.Context, base string, n int) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(base + "/health"); err == nil {
			var h struct {
				Workers int `json:"workers"`
			}
			_ = jsonDecode(resp, &h)
			if resp.StatusCode == http.StatusOK && h.Workers >= n {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s never reported %d ready workers", base, n)
}

// profileSelf starts a CPU profile of this process into path; the returned
// function stops it.
func profileSelf(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
