package embedclient

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/proctest"
)

// flaky serves handlers in turn, one per call, repeating the last.
func flaky(t *testing.T, handlers ...http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(calls.Add(1)) - 1
		handlers[min(n, len(handlers)-1)](w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

func vectorsHandler(n int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Documents []string `json:"documents"`
			InputType string   `json:"input_type"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		out := make([][]float32, n)
		for i := range out {
			out[i] = []float32{float32(i), float32(len(req.InputType))}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"embeddings": out})
	}
}

// hangUp closes the connection without an answer: a connection error.
func hangUp(w http.ResponseWriter, _ *http.Request) {
	conn, _, _ := w.(http.Hijacker).Hijack()
	conn.Close()
}

// hold answers nothing until the client gives up or the test ends (the
// test's context ends before cleanups, so the server's Close can return).
func hold(t *testing.T) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-t.Context().Done():
		case <-r.Context().Done():
		}
	}
}

func status(code int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(body))
	}
}

func fast(opts ...Option) []Option {
	return append([]Option{WithRetries(3, time.Millisecond)}, opts...)
}

func TestEmbedRetriesConnectionErrors(t *testing.T) {
	t.Parallel()
	srv, calls := flaky(t, hangUp, hangUp, vectorsHandler(2))
	vs, err := New(srv.URL, fast()...).Embed(context.Background(), []string{"a", "b"})
	require.NoError(t, err)
	require.Len(t, vs, 2)
	require.EqualValues(t, 3, calls.Load())
}

func TestEmbedGivesUpAfterThreeAttempts(t *testing.T) {
	t.Parallel()
	srv, calls := flaky(t, hangUp)
	_, err := New(srv.URL, fast()...).Embed(context.Background(), []string{"a"})
	require.ErrorContains(t, err, "3 attempts failed")
	require.EqualValues(t, 3, calls.Load())
}

func TestEmbedRetriesAttemptTimeouts(t *testing.T) {
	t.Parallel()
	srv, calls := flaky(t, hold(t), vectorsHandler(1))
	vs, err := New(srv.URL, fast(WithAttemptTimeout(50*time.Millisecond))...).Embed(context.Background(), []string{"a"})
	require.NoError(t, err)
	require.Len(t, vs, 1)
	require.EqualValues(t, 2, calls.Load())
}

func TestHTTPErrorsAreFinalAndTyped(t *testing.T) {
	t.Parallel()
	for _, code := range []int{400, 413, 429, 500, 503, 504} {
		srv, calls := flaky(t, status(code, `{"error":"nope","code":"some_code","request_id":"r1"}`))
		_, err := New(srv.URL, fast()...).Embed(context.Background(), []string{"a"})
		var se *StatusError
		require.ErrorAs(t, err, &se)
		require.Equal(t, code, se.StatusCode)
		require.Equal(t, "some_code", se.Code)
		require.Equal(t, "nope", se.Message)
		require.Equal(t, "r1", se.RequestID)
		require.EqualValues(t, 1, calls.Load(), "status %d is not retried", code)
	}
}

func TestEmbedChecksTheCount(t *testing.T) {
	t.Parallel()
	srv, _ := flaky(t, vectorsHandler(1))
	_, err := New(srv.URL, fast()...).Embed(context.Background(), []string{"a", "b"})
	require.ErrorIs(t, err, ErrCountMismatch)
}

func TestCallerDeadlineIsNotRetried(t *testing.T) {
	t.Parallel()
	srv, calls := flaky(t, hold(t))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := New(srv.URL, fast()...).Embed(ctx, []string{"a"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.EqualValues(t, 1, calls.Load())
}

func TestUnreachableServiceIsRetriedThenReported(t *testing.T) {
	t.Parallel()
	addr := proctest.Addr(t) // nothing listens there now
	_, err := New("http://"+addr, fast()...).EmbedOne(context.Background(), "a")
	require.ErrorContains(t, err, "3 attempts failed")
	require.ErrorContains(t, err, "connection refused")
}

func TestQueriesAndHealth(t *testing.T) {
	t.Parallel()
	srv, _ := flaky(t, vectorsHandler(1))
	vs, err := New(srv.URL, fast()...).EmbedQueries(context.Background(), []string{"q"})
	require.NoError(t, err)
	require.Equal(t, float32(len("query")), vs[0][1], "input_type query was sent")

	sick, _ := flaky(t, status(503, `{"status":"unhealthy","model_loaded":false,"workers":0,"reason":"no live worker"}`))
	h, err := New(sick.URL, fast()...).Health(context.Background())
	var se *StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, "unhealthy", h.Status)
	require.Equal(t, "no live worker", h.Reason)
	require.False(t, h.ModelLoaded)
}

func TestBlobRoundTrip(t *testing.T) {
	t.Parallel()
	v := []float32{0.5, -1, 3}
	b := VectorToBlob(v)
	require.Len(t, b, 12)
	got, err := BlobToVector(b)
	require.NoError(t, err)
	require.Equal(t, v, got)
	_, err = BlobToVector(b[:5])
	require.Error(t, err)
	_, err = BlobToVector(nil)
	require.Error(t, err)
	require.Equal(t, "T\nD\n#a #b", ProjectText("T", "D", []string{"a", "b"}))
}

func TestAPIKeyIsSent(t *testing.T) {
	t.Parallel()
	srv, _ := flaky(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer k" {
			status(401, `{"error":"missing or invalid API key","code":"unauthorized"}`)(w, r)
			return
		}
		vectorsHandler(1)(w, r)
	})
	_, err := New(srv.URL, fast()...).EmbedOne(context.Background(), "a")
	var se *StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, http.StatusUnauthorized, se.StatusCode)
	_, err = New(srv.URL, fast(WithAPIKey("k"))...).EmbedOne(context.Background(), "a")
	require.NoError(t, err)
}

func TestPriorityIsSent(t *testing.T) {
	t.Parallel()
	var got atomic.Value
	srv, _ := flaky(t, func(w http.ResponseWriter, r *http.Request) {
		var req EmbedRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		got.Store(req.Priority)
		_ = json.NewEncoder(w).Encode(map[string]any{"embeddings": [][]float32{{1}}})
	})
	_, err := New(srv.URL, WithPriority(Bulk)).Embed(context.Background(), []string{"a"})
	require.NoError(t, err)
	require.Equal(t, "bulk", got.Load())
	_, err = New(srv.URL).Embed(context.Background(), []string{"a"})
	require.NoError(t, err)
	require.Equal(t, "", got.Load(), "interactive by default: no field sent")
}
