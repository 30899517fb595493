// Package httpapi is the HTTP front door: /embed and /health, with the
// original Python service's contract.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nuid"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/queue"
)

// Embedder turns documents into vectors; *queue.Client is one.
type Embedder interface {
	Embed(ctx context.Context, req queue.Request) (queue.Result, error)
}

// Readiness says how many workers can embed now and, if none, why;
// *queue.Registry is one.
type Readiness interface {
	Ready() (int, string)
}

// Options configure the server.
type Options struct {
	Model          string
	Dims           int
	Limits         Limits
	RequestTimeout time.Duration
	// Broker reports whether NATS is usable; nil error means it is.
	Broker func() error
}

// Server serves the HTTP API.
type Server struct {
	emb   Embedder
	ready Readiness
	opts  Options
	log   *zap.Logger
	mux   *http.ServeMux
}

// New returns the API server.
func New(emb Embedder, ready Readiness, opts Options, log *zap.Logger) *Server {
	s := &Server{emb: emb, ready: ready, opts: opts, log: log.Named("http"), mux: http.NewServeMux()}
	s.mux.HandleFunc("POST /embed", s.handleEmbed)
	s.mux.HandleFunc("GET /health", s.handleHealth)
	// Errors are JSON everywhere, including for unknown routes and methods.
	s.mux.HandleFunc("/embed", s.methodNotAllowed("POST"))
	s.mux.HandleFunc("/health", s.methodNotAllowed("GET"))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, &requestError{http.StatusNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path)})
	})
	return s
}

// ServeHTTP tags each request with an id, recovers panics and routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := nuid.Next()
	w.Header().Set("X-Request-Id", id)
	r = r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("panic serving request", zap.String("request_id", id), zap.String("path", r.URL.Path), zap.Any("panic", p), zap.Stack("stack"))
			s.writeError(w, r, fmt.Errorf("internal error"))
		}
	}()
	s.mux.ServeHTTP(w, r)
}

func (s *Server) methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		s.writeError(w, r, &requestError{http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, allow)})
	}
}

type requestIDKey struct{}

func requestID(r *http.Request) string {
	id, _ := r.Context().Value(requestIDKey{}).(string)
	return id
}

func (s *Server) handleEmbed(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id := requestID(r)
	log := s.log.With(zap.String("request_id", id))
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			s.writeError(w, r, &requestError{http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type must be application/json, got %q", ct)})
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.Limits.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			err = tooLarge("request body is over %d bytes (EMBED_MAX_BODY_BYTES)", mbe.Limit)
		} else {
			err = badRequest("reading body: %v", err)
		}
		s.writeError(w, r, err)
		return
	}
	req, err := decodeEmbedRequest(body, s.opts.Limits)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if n, reason := s.ready.Ready(); n == 0 {
		s.writeError(w, r, fmt.Errorf("%w: %s", errNoWorker, reason))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.RequestTimeout)
	defer cancel()
	res, err := s.emb.Embed(ctx, queue.Request{ID: id, InputType: req.InputType, Documents: req.Documents})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	buf := AppendEmbeddings(make([]byte, 0, len(res.Vectors)*(s.opts.Dims*12+2)+20), res.Vectors)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(buf)))
	_, _ = w.Write(buf)
	log.Info("embedded", zap.Int("documents", len(req.Documents)), zap.Int("jobs", res.Jobs),
		zap.String("input_type", req.InputType), zap.Duration("took", time.Since(start)))
}

// AppendEmbeddings writes {"embeddings":[[...],...]} without reflection:
// shortest float32 decimal that round-trips, per value.
func AppendEmbeddings(buf []byte, vecs [][]float32) []byte {
	buf = append(buf, `{"embeddings":[`...)
	for i, v := range vecs {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, '[')
		for j, f := range v {
			if j > 0 {
				buf = append(buf, ',')
			}
			buf = strconv.AppendFloat(buf, float64(f), 'g', -1, 32)
		}
		buf = append(buf, ']')
	}
	return append(buf, "]}"...)
}

type healthResponse struct {
	Status      string `json:"status"`
	ModelLoaded bool   `json:"model_loaded"`
	Model       string `json:"model"`
	Dimensions  int    `json:"dimensions"`
	Workers     int    `json:"workers"`
	Reason      string `json:"reason,omitempty"`
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	h := healthResponse{Status: "healthy", Model: s.opts.Model, Dimensions: s.opts.Dims}
	if err := s.opts.Broker(); err != nil {
		h.Reason = "NATS: " + err.Error()
	} else if h.Workers, h.Reason = s.ready.Ready(); h.Workers > 0 {
		h.ModelLoaded = true
	}
	status := http.StatusOK
	if !h.ModelLoaded {
		h.Status, status = "unhealthy", http.StatusServiceUnavailable
		s.log.Debug("unhealthy", zap.String("reason", h.Reason))
	}
	writeJSON(w, status, h)
}

type errorResponse struct {
	Error     string `json:"error"`
	Code      string `json:"code"`
	RequestID string `json:"request_id"`
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code := statusOf(err)
	fields := []zap.Field{zap.String("request_id", requestID(r)), zap.String("path", r.URL.Path),
		zap.Int("status", status), zap.String("code", code), zap.Error(err)}
	switch {
	case status >= 500:
		s.log.Error("request failed", fields...)
	default:
		s.log.Info("request refused", fields...)
	}
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, errorResponse{Error: err.Error(), Code: code, RequestID: requestID(r)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
