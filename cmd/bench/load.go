package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/waywo/embed/embedclient"
)

// sample is what one load level measured.
type sample struct {
	Clients  int           `json:"clients"`
	Docs     int           `json:"docs"`
	Requests int           `json:"requests"`
	Errors   int           `json:"errors"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	DocsPerS float64       `json:"docs_per_s"`
	P50      time.Duration `json:"p50_ns"`
	P95      time.Duration `json:"p95_ns"`
	P99      time.Duration `json:"p99_ns"`
}

// corpus hands out distinct project-like texts so no cache can help.
type corpus struct {
	texts []string
	next  atomic.Int64
}

func (c *corpus) take(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = c.texts[int(c.next.Add(1))%len(c.texts)]
	}
	return out
}

// call sends one request of docs and reports an error for any failure.
type call func(ctx context.Context, docs []string) error

// drive runs clients in parallel, each sending requests of docsPer
// documents back to back, and counts the requests that complete within a
// window of d after a short warm-up. Counting by completion, not by start,
// keeps the backlog built up during the warm-up (64 clients' worth of work
// at 64 clients) from being computed inside the window yet left uncounted.
func drive(ctx context.Context, c *corpus, clients, docsPer int, d time.Duration, do call) sample {
	stop := make(chan struct{})
	t := time.AfterFunc(warmUp+d, func() { close(stop) })
	defer t.Stop()
	return driveUntil(ctx, c, clients, docsPer, 0, stop, do)
}

// warmUp is how long after the start requests are not counted.
const warmUp = 300 * time.Millisecond

// driveUntil is drive with a window that ends when stop closes, and a pause
// after each request of think on average (a user's, between searches),
// drawn evenly from think/2 to 3·think/2: with one fixed pause the clients
// fall in step with a backend whose calls take exact times (200 ms is five
// 40 ms bulk batches of the lanes' stand-in), and every query meets the
// same moment of the batch cycle, a lucky one or an unlucky one.
func driveUntil(ctx context.Context, c *corpus, clients, docsPer int, think time.Duration, stop <-chan struct{}, do call) sample {
	warm := time.Now().Add(warmUp)
	var mu sync.Mutex
	var lat []time.Duration
	s := sample{Clients: clients}
	stopped := func() bool {
		select {
		case <-stop:
			return true
		case <-ctx.Done():
			return true
		default:
			return false
		}
	}
	// The window ends when stop closes, not when the last request in
	// flight at that moment returns.
	ended := make(chan time.Time, 1)
	go func() {
		select {
		case <-stop:
		case <-ctx.Done():
		}
		ended <- time.Now()
	}()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for !stopped() {
				start := time.Now()
				err := do(ctx, c.take(docsPer))
				end := time.Now()
				if !end.Before(warm) && !stopped() {
					mu.Lock()
					if err != nil {
						s.Errors++
					} else {
						s.Requests++
						s.Docs += docsPer
						lat = append(lat, end.Sub(start))
					}
					mu.Unlock()
				}
				if think > 0 {
					select {
					case <-stop:
					case <-ctx.Done():
					case <-time.After(think/2 + rand.N(think)):
					}
				}
			}
		})
	}
	wg.Wait()
	s.Elapsed = (<-ended).Sub(warm)
	s.DocsPerS = float64(s.Docs) / s.Elapsed.Seconds()
	slices.Sort(lat)
	s.P50, s.P95, s.P99 = pct(lat, 50), pct(lat, 95), pct(lat, 99)
	return s
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

// pipelineCall embeds through the service with the Go client, no retries.
func pipelineCall(base string) call {
	c := embedclient.New(base, embedclient.WithRetries(1, 0), embedclient.WithHTTPClient(pooled()))
	return func(ctx context.Context, docs []string) error {
		_, err := c.Embed(ctx, docs)
		return err
	}
}

// directCall posts straight to Ollama's /api/embed; lock, when set,
// serialises calls as the original FastAPI service's blocked event loop did.
func directCall(ollama, model string, lock *sync.Mutex) call {
	hc := pooled()
	return func(ctx context.Context, docs []string) error {
		if lock != nil {
			lock.Lock()
			defer lock.Unlock()
		}
		body, _ := json.Marshal(map[string]any{"model": model, "input": docs})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, ollama+"/api/embed", bytes.NewReader(body))
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var out struct {
			Embeddings [][]float32 `json:"embeddings"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK || len(out.Embeddings) != len(docs) {
			return fmt.Errorf("status %d, %d vectors for %d docs", resp.StatusCode, len(out.Embeddings), len(docs))
		}
		return nil
	}
}

func pooled() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 0}}
}
