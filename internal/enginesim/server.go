// The stand-in server: Ollama's and OpenAI's embedding APIs over one
// modelled GPU.

package enginesim

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/vector"
)

// Server is a modelled engine on one GPU. Serial: every sequence is a pass
// of its own, one at a time, as Ollama runs an embedding model. Batching:
// the sequences of all calls in flight wait in one queue, and each pass
// takes as many as fit Cost.PassTokens. Both answer every input with one
// fixed unit vector; the time is the model's.
type Server struct {
	URL string

	cost     Cost
	model    string
	dims     int
	batching bool
	b64      string // the vector, as base64 of little-endian float32
	floats   []byte // the vector, as a JSON array
	srv      *http.Server

	// gpu is held by the serial runner's call computing: calls are served
	// in the order they came, all of a call's inputs before the next
	// call's, as Ollama's runner semaphore (FIFO) serves them.
	gpu   chan struct{}
	clock time.Time  // when the modelled GPU's last pass ends
	mu    sync.Mutex // batching: the queue
	ready *sync.Cond
	queue []*seq
	stop  bool

	seqs, tokens, passes atomic.Int64
	busy                 atomic.Int64 // modelled nanoseconds of passes
}

type seq struct {
	tokens int
	queued time.Time
	done   *sync.WaitGroup
}

// Stats are what a server computed.
type Stats struct {
	Sequences, Tokens, Passes int64
	Busy                      time.Duration // the GPU's time in passes
}

// Start serves a modelled engine of model (its name and OpenAI model id)
// answering dims-long vectors on a free loopback port.
func Start(cost Cost, model string, dims int, batching bool) (*Server, error) {
	s := &Server{cost: cost, model: model, dims: dims, batching: batching, gpu: make(chan struct{}, 1)}
	r := rand.New(rand.NewPCG(uint64(dims), 2))
	v, norm := make([]float32, dims), 0.0
	for i := range v {
		x := r.NormFloat64()
		v[i] = float32(x)
		norm += x * x
	}
	for i := range v {
		v[i] = float32(float64(v[i]) / math.Sqrt(norm))
	}
	s.b64 = base64.StdEncoding.EncodeToString(vector.Append(nil, v))
	s.floats, _ = json.Marshal(v)
	s.ready = sync.NewCond(&s.mu)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/embed", s.ollamaEmbed)
	mux.HandleFunc("POST /api/show", s.ollamaShow)
	mux.HandleFunc("GET /api/tags", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintf(w, `{"models":[{"name":%q,"model":%q,"digest":"sha256:%064x"}]}`, model+":latest", model+":latest", 42)
	})
	mux.HandleFunc("GET /api/version", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"version":"sim"}`)) })
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintf(w, `{"object":"list","data":[{"id":%q,"object":"model","owned_by":"enginesim","meta":{"gpu":%q}}]}`, model, cost.GPU.Name)
	})
	mux.HandleFunc("POST /v1/embeddings", s.openaiEmbed)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.URL = "http://" + ln.Addr().String()
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	if batching {
		go s.schedule()
	}
	return s, nil
}

// Stop stops serving.
func (s *Server) Stop() {
	_ = s.srv.Close()
	s.mu.Lock()
	s.stop = true
	s.ready.Broadcast()
	s.mu.Unlock()
}

// Stats are the counts so far.
func (s *Server) Stats() Stats {
	return Stats{Sequences: s.seqs.Load(), Tokens: s.tokens.Load(), Passes: s.passes.Load(), Busy: time.Duration(s.busy.Load())}
}

// compute spends the model's time on inputs and returns their tokens.
func (s *Server) compute(inputs []string) int {
	total := 0
	var done sync.WaitGroup
	arrived := time.Now()
	if !s.batching {
		s.gpu <- struct{}{}
		defer func() { <-s.gpu }()
	}
	for _, in := range inputs {
		t := Tokens(in)
		total += t
		s.seqs.Add(1)
		s.tokens.Add(int64(t))
		if !s.batching {
			s.pass(t, arrived)
			continue
		}
		done.Add(1)
		s.mu.Lock()
		s.queue = append(s.queue, &seq{tokens: t, queued: arrived, done: &done})
		s.ready.Signal()
		s.mu.Unlock()
	}
	done.Wait()
	return total
}

// pass spends one forward pass on the modelled GPU's clock, its sequences
// all there since ready: it starts when the last pass ended, or at ready
// if they came later, so that back-to-back passes end at the sum of their
// modelled times whatever a sleep overshoots (a few hundred microseconds,
// a tenth of a short pass). Only one goroutine at a time runs it (the
// serial runner's holder, or the scheduler).
func (s *Server) pass(tokens int, ready time.Time) {
	d := s.cost.Pass(tokens)
	start := ready
	if s.clock.After(start) {
		start = s.clock
	}
	s.clock = start.Add(d)
	time.Sleep(time.Until(s.clock))
	s.busy.Add(int64(d))
	s.passes.Add(1)
}

// schedule is the batching engine's loop: each pass takes the waiting
// sequences, oldest first, as far as the token budget goes (one at least).
func (s *Server) schedule() {
	for {
		s.mu.Lock()
		for len(s.queue) == 0 && !s.stop {
			s.ready.Wait()
		}
		if s.stop {
			s.mu.Unlock()
			return
		}
		n, tokens := 0, 0
		var ready time.Time
		for n < len(s.queue) && (n == 0 || tokens+s.queue[n].tokens <= s.cost.PassTokens) {
			tokens += s.queue[n].tokens
			if s.queue[n].queued.After(ready) {
				ready = s.queue[n].queued
			}
			n++
		}
		batch := s.queue[:n:n]
		s.queue = s.queue[n:]
		s.mu.Unlock()
		s.pass(tokens, ready)
		for _, q := range batch {
			q.done.Done()
		}
	}
}

type embedRequest struct {
	Model          string   `json:"model"`
	Input          []string `json:"input"`
	EncodingFormat string   `json:"encoding_format"`
}

func (s *Server) decode(w http.ResponseWriter, r *http.Request) (embedRequest, bool) {
	var req embedRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, fmt.Sprintf(`{"error":%q}`, err.Error()), http.StatusBadRequest)
		return req, false
	}
	if req.Model != s.model && req.Model != s.model+":latest" {
		http.Error(w, `{"error":"model not found"}`, http.StatusNotFound)
		return req, false
	}
	return req, true
}

func (s *Server) ollamaEmbed(w http.ResponseWriter, r *http.Request) {
	req, ok := s.decode(w, r)
	if !ok {
		return
	}
	tokens := s.compute(req.Input)
	buf := ollamatest.AppendEmbedReply(nil, req.Model, s.floats, len(req.Input), tokens)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf)
}

func (s *Server) ollamaShow(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.decode(w, r); !ok {
		return
	}
	_, _ = fmt.Fprintf(w, `{"modelfile":"","details":{"family":"sim"},"capabilities":["embedding"],`+
		`"model_info":{"general.architecture":"sim","sim.embedding_length":%d,"sim.pooling_type":1}}`, s.dims)
}

func (s *Server) openaiEmbed(w http.ResponseWriter, r *http.Request) {
	req, ok := s.decode(w, r)
	if !ok {
		return
	}
	tokens := s.compute(req.Input)
	one := strconv.Quote(s.b64)
	if req.EncodingFormat != "base64" {
		one = string(s.floats)
	}
	buf := make([]byte, 0, len(req.Input)*(len(one)+40)+128)
	buf = append(buf, `{"object":"list","model":`...)
	buf = strconv.AppendQuote(buf, req.Model)
	buf = append(buf, `,"data":[`...)
	for i := range req.Input {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"object":"embedding","index":`...)
		buf = strconv.AppendInt(buf, int64(i), 10)
		buf = append(buf, `,"embedding":`...)
		buf = append(buf, one...)
		buf = append(buf, '}')
	}
	buf = append(buf, `],"usage":{"prompt_tokens":`...)
	buf = strconv.AppendInt(buf, int64(tokens), 10)
	buf = append(buf, `,"total_tokens":`...)
	buf = strconv.AppendInt(buf, int64(tokens), 10)
	buf = append(buf, `}}`...)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf)
}
