package ollamatest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Fake is an Ollama-compatible server that does no model work: the
// zero-cost backend of transport benchmarks. /api/embed answers every input
// with the same fixed unit vector. With PerInput set it spends that long per
// input, one input at a time across all calls, as one GPU runner would:
// calls are served first come, first served, all of a call's inputs before
// the next call's, as Ollama's runner semaphore (FIFO) serves the inputs an
// /api/embed call queues at once.
type Fake struct {
	URL string

	model    string
	dims     int
	perInput time.Duration
	vector   []byte        // one vector, JSON-encoded
	runner   chan struct{} // held by the call computing; waiting senders are served in order
	mu       sync.Mutex
	busy     time.Duration // guarded by mu
	clock    time.Time     // when the runner's last input ends; guarded by mu
	calls    atomic.Int64
	srv      *http.Server
}

// FakeDigest is the digest the fake lists for its model.
const FakeDigest = "sha256:fa4ef4ef4ef4ef4ef4ef4ef4ef4ef4ef4ef4ef4ef4ef4ef4ef4ef4ef4ef4ef4e"

// StartFake serves a fake Ollama on a free loopback port.
func StartFake(model string, dims int, perInput time.Duration) (*Fake, error) {
	f := &Fake{model: model, dims: dims, perInput: perInput, runner: make(chan struct{}, 1)}
	// A unit vector of Gaussian values, like a real embedding, written as
	// Ollama writes it (encoding/json's shortest float32 form, about 11
	// characters a value): parsing them is the worker's main cost.
	r := rand.New(rand.NewPCG(uint64(dims), 1))
	v, norm := make([]float64, dims), 0.0
	for i := range v {
		v[i] = r.NormFloat64()
		norm += v[i] * v[i]
	}
	v32 := make([]float32, dims)
	for i := range v {
		v32[i] = float32(v[i] / math.Sqrt(norm))
	}
	f.vector, _ = json.Marshal(v32)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/embed", f.embed)
	mux.HandleFunc("POST /api/show", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model string `json:"model"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		if req.Model != f.model {
			http.Error(w, `{"error":"model not found"}`, http.StatusNotFound)
			return
		}
		_, _ = fmt.Fprintf(w, `{"modelfile":"","details":{"family":"fake"},"capabilities":["embedding"],`+
			`"model_info":{"general.architecture":"fake","fake.embedding_length":%d,"fake.pooling_type":1}}`, f.dims)
	})
	mux.HandleFunc("GET /api/tags", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintf(w, `{"models":[{"name":%q,"model":%q,"digest":%q}]}`, f.model+":latest", f.model+":latest", FakeDigest)
	})
	mux.HandleFunc("GET /api/version", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"version":"fake"}`))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("Ollama is running")) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f.URL = "http://" + ln.Addr().String()
	f.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = f.srv.Serve(ln) }()
	return f, nil
}

func (f *Fake) embed(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model string   `json:"model"`
		Input []string `json:"input"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, fmt.Sprintf(`{"error":%q}`, err.Error()), http.StatusBadRequest)
		return
	}
	if req.Model != f.model {
		http.Error(w, `{"error":"model not found"}`, http.StatusNotFound)
		return
	}
	if f.perInput > 0 {
		arrived := time.Now()
		f.runner <- struct{}{} // a channel's blocked senders go in the order they came
		for range req.Input {
			// The modelled GPU time of one input, on the runner's own clock:
			// an input that was waiting when the last one ended starts when
			// that one ended, so inputs back to back end perInput apart
			// whatever a sleep overshoots (a sleep of 5 ms runs 5.25 ms
			// here, more when it wakes an idle machine), as a GPU's would.
			f.mu.Lock()
			start := arrived
			if f.clock.After(start) {
				start = f.clock
			}
			f.clock = start.Add(f.perInput)
			f.busy += f.perInput
			end := f.clock
			f.mu.Unlock()
			time.Sleep(time.Until(end))
		}
		<-f.runner
	}
	f.calls.Add(1)
	buf := AppendEmbedReply(nil, f.model, f.vector, len(req.Input), len(req.Input))
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf)
}

// AppendEmbedReply appends to buf an /api/embed reply as Ollama writes
// it: model, n copies of vector (one JSON array), the prompt tokens.
func AppendEmbedReply(buf []byte, model string, vector []byte, n, tokens int) []byte {
	buf = slices.Grow(buf, n*(len(vector)+1)+64)
	buf = append(buf, `{"model":`...)
	buf = strconv.AppendQuote(buf, model)
	buf = append(buf, `,"embeddings":[`...)
	for i := range n {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, vector...)
	}
	buf = append(buf, `],"prompt_eval_count":`...)
	buf = strconv.AppendInt(buf, int64(tokens), 10)
	return append(buf, '}')
}

// RunnerStats is what the fake's runner has done: the time it spent on
// inputs (perInput each, on its own clock) and the
// /api/embed calls it answered. Over an interval, the rest of the wall
// time is the runner waiting for the pipeline.
type RunnerStats struct {
	Busy  time.Duration
	Calls int
}

// Stats is what the runner has done so far.
func (f *Fake) Stats() RunnerStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return RunnerStats{Busy: f.busy, Calls: int(f.calls.Load())}
}

// Stop shuts the fake down.
func (f *Fake) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		_ = f.srv.Close()
	}
}
