// Package httpapi is the HTTP front door: /embed and /health, with the
// original Python service's contract.
package httpapi

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/waywo/embed/embedclient"
	"github.com/waywo/embed/internal/dispatch"
	"github.com/waywo/embed/internal/metrics"
	"github.com/waywo/embed/internal/tracing"
	"github.com/waywo/embed/internal/vector"
	"github.com/waywo/embed/internal/wire"
)

// Queue turns documents into vectors through the job queue; *dispatch.Client is one.
type Queue interface {
	Embed(ctx context.Context, req dispatch.Request) (dispatch.Result, error)
}

// Readiness says how many workers can embed now and, if none, why;
// *dispatch.Liveness is one.
type Readiness interface {
	Ready() (int, string)
}

// Options configure the server.
type Options struct {
	Model string
	Dims  int
	// Fingerprint, when set, tells the model fingerprint the workers serve
	// (ok false while none is known); /health and /v1/models show it.
	Fingerprint    func() (fp vector.Fingerprint, ok bool)
	Limits         Limits
	RequestTimeout time.Duration
	// Broker reports whether NATS is usable; nil error means it is. Left
	// nil, there is no broker to ask.
	Broker func() error
	// Degraded, when set, says what serves with less redundancy than
	// configured ("" when nothing); /health shows it.
	Degraded func() string
	// Cache, when set, answers repeated texts without a model call.
	Cache *Cache
	// APIKey, when set, is required as "Authorization: Bearer <key>" on
	// every route but /health and /metrics.
	APIKey string
	// Metrics counts requests; MetricsHandler, when set, serves /metrics.
	Metrics        *metrics.API
	MetricsHandler http.Handler
	// Projects, when set, serves the project sync routes; without it they
	// answer 404 saying the sync is off.
	Projects Projects
	// MaxInflightBytes bounds the bytes of requests in flight (bodies read
	// and decoded, vectors awaiting their answer); past it a request is
	// refused with 429. 0: no bound.
	MaxInflightBytes int64
}

// Projects is the sync of waywo_projects as the HTTP routes see it.
type Projects interface {
	// Changed queues a sync of project id, like a NATS event does.
	Changed(ctx context.Context, id int64) error
	// Status counts projects by state and lists a page of the failed and
	// retrying ones.
	Status(ctx context.Context, page embedclient.Page) (embedclient.SyncStatus, error)
	// Search answers the k projects nearest to a query's vector (valid
	// ones only with validOnly); Similar those nearest to project id's own
	// vector, itself left out. An unknown project, or one without a
	// vector, is ErrNotFound; an index loading or a file unreadable,
	// ErrUnavailable. The answer is the wire type: this package serves
	// searches without importing the index, which reads SQLite, so that
	// a worker (which serves /health from here) is built without cgo.
	Search(ctx context.Context, v []float32, k int, validOnly bool) (embedclient.SearchResponse, error)
	Similar(ctx context.Context, id int64, k int, validOnly bool) (embedclient.SearchResponse, error)
}

// Server serves the HTTP API.
type Server struct {
	queue  Queue
	ready  Readiness
	opts   Options
	log    *zap.Logger
	mux    *http.ServeMux
	budget *budget
}

// New returns the API server.
func New(q Queue, ready Readiness, opts Options, log *zap.Logger) *Server {
	if opts.Broker == nil {
		opts.Broker = func() error { return nil }
	}
	s := &Server{queue: q, ready: ready, opts: opts, log: log.Named("http"), mux: http.NewServeMux(), budget: newBudget(opts.MaxInflightBytes)}
	s.mux.HandleFunc("POST /embed", s.handleEmbed)
	s.mux.HandleFunc("POST /v1/embeddings", s.handleOpenAI)
	s.mux.HandleFunc("GET /v1/models", s.handleModels)
	s.mux.HandleFunc("GET /v1/models/{id}", s.handleModel)
	s.mux.HandleFunc("GET /health", s.handleHealth)
	s.mux.HandleFunc("POST /projects/{id}/changed", s.handleProjectChanged)
	s.mux.HandleFunc("GET /projects/sync-status", s.handleSyncStatus)
	s.mux.HandleFunc("POST /search", s.handleSearch)
	s.mux.HandleFunc("GET /projects/{id}/similar", s.handleSimilar)
	// Errors are JSON everywhere, including for unknown routes and methods.
	s.mux.HandleFunc("/embed", s.methodNotAllowed("POST"))
	s.mux.HandleFunc("/v1/embeddings", s.methodNotAllowed("POST"))
	s.mux.HandleFunc("/v1/models", s.methodNotAllowed("GET"))
	s.mux.HandleFunc("/health", s.methodNotAllowed("GET"))
	s.mux.HandleFunc("/projects/{id}/changed", s.methodNotAllowed("POST"))
	s.mux.HandleFunc("/projects/sync-status", s.methodNotAllowed("GET"))
	s.mux.HandleFunc("/search", s.methodNotAllowed("POST"))
	s.mux.HandleFunc("/projects/{id}/similar", s.methodNotAllowed("GET"))
	if opts.MetricsHandler != nil {
		s.mux.Handle("GET /metrics", opts.MetricsHandler)
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, &requestError{http.StatusNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path)})
	})
	return s
}

// ServeHTTP tags each request with an id, recovers panics, routes and
// counts the outcome by route.
func (s *Server) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id := nuid.Next()
	w := &statusWriter{ResponseWriter: rw, status: http.StatusOK}
	w.Header().Set("X-Request-Id", id)
	// The server span, continuing the caller's trace when it sent a
	// traceparent; renamed for its route once the mux has matched it.
	ctx := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := tracing.Tracer().Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path), attribute.String("embed.request_id", id)))
	r = r.WithContext(context.WithValue(ctx, requestIDKey{}, id))
	defer func() {
		route := r.Pattern // set by the mux on this request
		if route == "" {
			route = "unmatched"
		} else {
			span.SetName(route) // "POST /embed"
			path := route
			if _, p, ok := strings.Cut(route, " "); ok {
				path = p
			}
			span.SetAttributes(attribute.String("http.route", path))
		}
		span.SetAttributes(attribute.Int("http.response.status_code", w.status))
		if w.status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(w.status))
		}
		span.End()
		s.opts.Metrics.Request(route, w.status, time.Since(start))
	}()
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.logFor(r).Error("panic serving request", zap.String("path", r.URL.Path), zap.Any("panic", p), zap.Stack("stack"))
			s.writeError(w, r, fmt.Errorf("internal error"))
		}
	}()
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="waywo-embed"`)
		err := &requestError{http.StatusUnauthorized, "missing or invalid API key: send Authorization: Bearer <EMBED_API_KEY>"}
		if strings.HasPrefix(r.URL.Path, "/v1/") {
			s.writeOpenAIError(w, r, err)
		} else {
			s.writeError(w, r, err)
		}
		return
	}
	s.mux.ServeHTTP(w, r)
}

// authorized checks the bearer key in constant time (over digests, so the
// key's length does not leak either). /health and /metrics stay open for
// probes and scrapers.
func (s *Server) authorized(r *http.Request) bool {
	if s.opts.APIKey == "" || r.URL.Path == "/health" || r.URL.Path == "/metrics" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	want := sha256.Sum256([]byte(s.opts.APIKey))
	have := sha256.Sum256([]byte(strings.TrimSpace(got)))
	return ok && subtle.ConstantTimeCompare(want[:], have[:]) == 1
}

func (s *Server) methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		s.writeError(w, r, &requestError{http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, allow)})
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type requestIDKey struct{}

// logFor is the logger of one request: every line carries its request
// id and, with tracing on, its trace and span ids.
func (s *Server) logFor(r *http.Request) *zap.Logger {
	return s.log.With(append([]zap.Field{zap.String("request_id", requestID(r))}, tracing.Fields(r.Context())...)...)
}

func requestID(r *http.Request) string {
	id, _ := r.Context().Value(requestIDKey{}).(string)
	return id
}

func (s *Server) handleEmbed(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	h, err := s.admitBody(r)
	defer h.release()
	if err != nil {
		s.refuseUnread(w, r, err, s.writeError)
		return
	}
	body, err := s.readJSONBody(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	req, err := decodeEmbedRequest(body, s.opts.Limits)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.admitDocuments(h, len(body), len(req.Documents), !wantsBinary(r)); err != nil {
		s.writeError(w, r, err)
		return
	}
	ln, err := lane(r, req.Priority)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	res, err := s.embedDocs(r, req.InputType, ln, req.Documents)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if wantsBinary(r) {
		// Raw little-endian float32, vector after vector: no float
		// formatting or parsing at either end (the Go client asks for it).
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("X-Embedding-Count", strconv.Itoa(len(res.Vectors)))
		w.Header().Set("X-Embedding-Dimensions", strconv.Itoa(s.opts.Dims))
		w.Header().Set("Content-Length", strconv.Itoa(len(res.Vectors)*s.opts.Dims*4))
		writeVectors(w, res.Vectors)
	} else {
		buf := AppendEmbeddings(make([]byte, 0, len(res.Vectors)*(s.opts.Dims*12+2)+20), res.Vectors)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(buf)))
		_, _ = w.Write(buf)
	}
	// Debug: a line per successful request would grow the logs with the
	// load (the requests are counted in /metrics); failures log at info
	// and above.
	s.logFor(r).Debug("embedded", zap.Int("documents", len(req.Documents)),
		zap.Int("cached", res.cached), zap.Int("jobs", res.Jobs), zap.String("input_type", req.InputType), zap.String("lane", string(ln)),
		zap.Duration("took", time.Since(start)))
}

// readJSONBody checks the content type and reads a body within the limit.
func (s *Server) readJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return nil, &requestError{http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type must be application/json, got %q", ct)}
		}
	}
	limit := s.opts.Limits.MaxBodyBytes
	// Refused before the upload: a client that sent Expect: 100-continue
	// gets 413 without sending the body (the server answers "100 Continue"
	// only when the body is first read).
	if r.ContentLength > limit {
		return nil, tooLarge("request body is %d bytes, over %d (EMBED_MAX_BODY_BYTES)", r.ContentLength, limit)
	}
	var in io.Reader = http.MaxBytesReader(w, r.Body, limit)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(in)
		if err != nil {
			return nil, badRequest("Content-Encoding is gzip, but the body is not: %v", err)
		}
		defer zr.Close()
		// The limit holds for what the body expands to, too.
		in = io.LimitReader(zr, limit+1)
	default:
		return nil, &requestError{http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Encoding %q is not supported: send the body as it is, or gzip", enc)}
	}
	body, err := io.ReadAll(in)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge("request body is over %d bytes (EMBED_MAX_BODY_BYTES)", mbe.Limit)
		}
		return nil, badRequest("reading body: %v", err)
	}
	if int64(len(body)) > limit {
		return nil, tooLarge("request body expands to over %d bytes (EMBED_MAX_BODY_BYTES)", limit)
	}
	return body, nil
}

type embedResult struct {
	dispatch.Result
	cached int
}

// embedDocs answers each distinct text once: from the cache when it can,
// the rest through the queue in one request. Repeats within the request
// share one model input.
func (s *Server) embedDocs(r *http.Request, inputType string, lane wire.Lane, docs []string) (embedResult, error) {
	s.opts.Metrics.Documents(inputType, len(docs))
	out := embedResult{Result: dispatch.Result{Vectors: make([][]float32, len(docs))}}
	slot := make(map[string]int, len(docs)) // text -> index into missing
	var missing []string
	var first []int // first document index of each missing text
	for i, d := range docs {
		if v, ok := s.cached(inputType, d); ok {
			out.Vectors[i] = v
			out.cached++
			continue
		}
		if _, ok := slot[d]; !ok {
			slot[d] = len(missing)
			missing = append(missing, d)
			first = append(first, i)
		}
	}
	if s.opts.Cache != nil {
		s.opts.Metrics.Cache(out.cached, len(docs)-out.cached)
	}
	if len(missing) == 0 {
		return out, nil
	}
	if n, reason := s.ready.Ready(); n == 0 {
		return out, fmt.Errorf("%w: %s", errNoWorker, reason)
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.RequestTimeout)
	defer cancel()
	res, err := s.queue.Embed(ctx, dispatch.Request{ID: requestID(r), InputType: inputType, Lane: lane, Documents: missing})
	if err != nil {
		var de *dispatch.DocumentError
		if errors.As(err, &de) && de.Index >= 0 && de.Index < len(first) {
			err = &dispatch.DocumentError{Index: first[de.Index], Err: de.Err}
		}
		return out, err
	}
	for i, d := range docs {
		if out.Vectors[i] == nil {
			out.Vectors[i] = res.Vectors[slot[d]]
		}
	}
	if s.opts.Cache != nil {
		for j, v := range res.Vectors {
			// A copy: v shares its backing array with the rest of its job's
			// reply, which the cache must not keep alive.
			s.opts.Cache.Add(NewCacheKey(s.opts.Model, inputType, missing[j]), slices.Clone(v))
		}
	}
	out.Tokens, out.Jobs = res.Tokens, res.Jobs
	return out, nil
}

// cached looks text up in the cache; with the cache off it costs nothing,
// not even the key's hash.
func (s *Server) cached(inputType, text string) ([]float32, bool) {
	if s.opts.Cache == nil {
		return nil, false
	}
	return s.opts.Cache.Get(NewCacheKey(s.opts.Model, inputType, text))
}
