// Writing answers: vectors as JSON or binary, health, errors.

package httpapi

import (
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/waywo/embed/embedclient"
	"github.com/waywo/embed/internal/vector"
)

// chunks holds the buffers binary answers are written through: a whole
// answer in one fresh buffer (16 KB a 4096-d vector) was the api's largest
// allocation and pushed its peak RSS up under load.
var chunks = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// writeVectors writes vs as little-endian float32, about 64 KB at a time.
func writeVectors(w io.Writer, vs [][]float32) {
	bp := chunks.Get().(*[]byte)
	defer chunks.Put(bp)
	buf := (*bp)[:0]
	for _, v := range vs {
		if len(buf) > 0 && len(buf)+4*len(v) > cap(buf) {
			if _, err := w.Write(buf); err != nil {
				return // the client went away
			}
			buf = buf[:0]
		}
		buf = vector.Append(buf, v)
	}
	_, _ = w.Write(buf)
	*bp = buf[:0]
}

// wantsBinary: the client prefers application/octet-stream to JSON.
func wantsBinary(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "application/octet-stream" {
			return true
		}
	}
	return false
}

// AppendEmbeddings writes {"embeddings":[[...],...]} without reflection:
// shortest float32 decimal that round-trips, per value.
func AppendEmbeddings(buf []byte, vecs [][]float32) []byte {
	buf = append(buf, `{"embeddings":[`...)
	for i, v := range vecs {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendFloats(buf, v)
	}
	return append(buf, "]}"...)
}

func appendFloats(buf []byte, v []float32) []byte {
	buf = append(buf, '[')
	for j, f := range v {
		if j > 0 {
			buf = append(buf, ',')
		}
		buf = strconv.AppendFloat(buf, float64(f), 'g', -1, 32)
	}
	return append(buf, ']')
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	h := embedclient.Health{Model: s.opts.Model, Dimensions: s.opts.Dims}
	if err := s.opts.Broker(); err != nil {
		h.Reason = "NATS: " + err.Error()
	} else if h.Workers, h.Reason = s.ready.Ready(); h.Workers > 0 {
		h.ModelLoaded = true
	}
	if fp, ok := s.fingerprint(); ok {
		h.ModelDigest, h.OllamaVersion = fp.Digest, fp.OllamaVersion
	}
	if s.opts.Degraded != nil {
		h.Degraded = s.opts.Degraded()
	}
	if !h.ModelLoaded {
		s.log.Debug("unhealthy", zap.String("reason", h.Reason))
	}
	writeHealth(w, h)
}

// writeHealth writes the one health document, the api's and a worker's:
// 200 "healthy" when it can embed now (ModelLoaded), 503 "unhealthy" with
// the reason otherwise.
func writeHealth(w http.ResponseWriter, h embedclient.Health) {
	status := http.StatusOK
	h.Status = "healthy"
	if !h.ModelLoaded {
		h.Status, status = "unhealthy", http.StatusServiceUnavailable
	}
	writeJSON(w, status, h)
}

// WorkerHandler serves a standalone worker's GET /metrics and GET /health:
// the health document of the model and dimensions it serves, 200 while
// ready says the worker can embed (for container healthchecks).
func WorkerHandler(metrics http.Handler, model string, dims int, ready func() (bool, string)) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		h := embedclient.Health{Model: model, Dimensions: dims}
		if ok, reason := ready(); ok {
			h.ModelLoaded, h.Workers = true, 1
		} else {
			h.Reason = reason
		}
		writeHealth(w, h)
	})
	return mux
}

func (s *Server) fingerprint() (vector.Fingerprint, bool) {
	if s.opts.Fingerprint == nil {
		return vector.Fingerprint{}, false
	}
	return s.opts.Fingerprint()
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code := s.logError(r, err)
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, embedclient.ErrorResponse{Error: err.Error(), Code: code, RequestID: requestID(r)})
}

// logError logs and counts a failed request and returns its status and code.
func (s *Server) logError(r *http.Request, err error) (int, string) {
	status, code := statusOf(err)
	s.opts.Metrics.Error(code)
	fields := []zap.Field{zap.String("path", r.URL.Path), zap.Int("status", status), zap.String("code", code), zap.Error(err)}
	switch {
	case status >= 500:
		s.logFor(r).Error("request failed", fields...)
	default:
		s.logFor(r).Info("request refused", fields...)
	}
	return status, code
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
