package openai_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/engine"
	"github.com/waywo/embed/internal/ollama"
	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/openai"
	"github.com/waywo/embed/internal/systemtest"
	"github.com/waywo/embed/internal/vector"
	"github.com/waywo/embed/internal/worker"
)

func TestMain(m *testing.M) { ollamatest.RunTests(m) }

// engineAt is an Endpoint for the shared Ollama's model behind base.
func engineAt(t *testing.T, base string, mutate func(*openai.Options)) *openai.Endpoint {
	t.Helper()
	ol := ollamatest.Shared(t)
	u, err := url.Parse(base)
	require.NoError(t, err)
	// Ollama's /v1/models lists its models with their tag: that is the id.
	o := openai.Options{Model: ol.Model + ":latest", Dims: ol.Dims, MaxBatch: 8, Timeout: 30 * time.Second}
	if mutate != nil {
		mutate(&o)
	}
	return openai.NewEndpoint(u, o)
}

// direct embeds through Ollama's own /api/embed, the reference.
func direct(t *testing.T, texts []string) [][]float32 {
	t.Helper()
	ol := ollamatest.Shared(t)
	u, err := url.Parse(ol.URL)
	require.NoError(t, err)
	ep := ollama.NewEndpoint(u, ollama.Options{Model: ol.Model, Dims: ol.Dims, MaxBatch: 8, Timeout: 30 * time.Second, KeepAlive: -1, Truncate: true})
	require.NoError(t, ep.Prepare(context.Background()))
	out, err := ep.EmbedAll(context.Background(), texts)
	require.NoError(t, err)
	return out.Vectors
}

var texts = []string{"a tool that turns HN threads into a map", "semantic search for side projects", "x", "ünïcödé and emoji 🚀"}

// Ollama's own OpenAI-compatible API gives, through this backend, the
// vectors its /api/embed gives, bit for bit.
func TestSameVectorsAsOllamaAPIEmbed(t *testing.T) {
	ol := ollamatest.Shared(t)
	ep := engineAt(t, ol.URL+"/v1", nil)
	require.NoError(t, ep.Prepare(context.Background()))
	require.NotEmpty(t, ep.Fingerprint().Digest)
	out, err := ep.EmbedAll(context.Background(), texts)
	require.NoError(t, err)
	require.Equal(t, direct(t, texts), out.Vectors)
	require.Positive(t, out.Tokens, "the engine reports its prompt tokens")
	require.Equal(t, 1, out.Calls)

	before, err := ep.Probe(context.Background(), true)
	require.NoError(t, err)
	require.Equal(t, before, ep.Fingerprint(), "the same model, the same fingerprint")
}

// standIn is fault injection in front of the real Ollama's /v1: each
// request goes to fault first, which may answer it itself.
func standIn(t *testing.T, fault func(w http.ResponseWriter, r *http.Request, body []byte) bool) *httptest.Server {
	t.Helper()
	ol := ollamatest.Shared(t)
	target, err := url.Parse(ol.URL)
	require.NoError(t, err)
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if fault != nil && fault(w, r, body) {
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func inputs(body []byte) []string {
	var req struct {
		Input []string `json:"input"`
	}
	_ = json.Unmarshal(body, &req)
	return req.Input
}

// An engine that refuses one input (400) fails it alone: its batch-mates
// get their vectors.
func TestRefusedInputIsIsolated(t *testing.T) {
	srv := standIn(t, func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		for _, in := range inputs(body) {
			if strings.Contains(in, "poison") {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = io.WriteString(w, `{"error":{"message":"input too long","type":"invalid_request_error"}}`)
				return true
			}
		}
		return false
	})
	ep := engineAt(t, srv.URL+"/v1", nil)
	require.NoError(t, ep.Prepare(context.Background()))
	in := []string{texts[0], "poison pill", texts[1], texts[2]}
	out, err := ep.EmbedAll(context.Background(), in)
	require.NoError(t, err)
	require.ErrorIs(t, out.Rejected[1], engine.ErrRejected)
	require.Contains(t, out.Rejected[1].Error(), "input too long")
	want := direct(t, []string{texts[0], texts[1], texts[2]})
	require.Equal(t, [][]float32{want[0], nil, want[1], want[2]}, out.Vectors)
}

// A 429 comes back at once with its Retry-After, for the worker to rest
// the engine; 5xx and timeouts are tried again within the call.
func TestBusyAndFailingEngines(t *testing.T) {
	var calls, fail atomic.Int64
	var slow atomic.Bool
	srv := standIn(t, func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		if r.URL.Path != "/v1/embeddings" {
			return false
		}
		calls.Add(1)
		switch {
		case slow.Load():
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return true
		case fail.Load() == -1:
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, `{"error":{"message":"queue full"}}`)
			return true
		case fail.Load() > 0:
			fail.Add(-1)
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	ep := engineAt(t, srv.URL+"/v1", func(o *openai.Options) { o.Timeout = 300 * time.Millisecond })
	require.NoError(t, ep.Prepare(context.Background()))

	// engine.Computed runs when the engine answers 2xx, not on an error.
	var computed atomic.Int64
	ctx := engine.WithComputed(context.Background(), func() { computed.Add(1) })
	calls.Store(0)
	fail.Store(-1)
	_, err := ep.EmbedAll(ctx, texts)
	d, busy := engine.RetryAfter(err)
	require.True(t, busy, "%v", err)
	require.Equal(t, 7*time.Second, d)
	require.ErrorIs(t, err, engine.ErrUnavailable)
	require.EqualValues(t, 1, calls.Load(), "a 429 is not tried again within the call")

	calls.Store(0)
	fail.Store(2) // two 503s, then the engine answers
	out, err := ep.EmbedAll(ctx, texts)
	require.NoError(t, err)
	require.Equal(t, direct(t, texts), out.Vectors)
	require.EqualValues(t, 3, calls.Load())
	require.EqualValues(t, 1, computed.Load(), "the answer, not the 429 or the 503s")

	calls.Store(0)
	fail.Store(0)
	slow.Store(true) // every attempt times out
	_, err = ep.EmbedAll(ctx, texts)
	require.ErrorIs(t, err, engine.ErrUnavailable)
	_, busy = engine.RetryAfter(err)
	require.False(t, busy)
	require.EqualValues(t, 3, calls.Load(), "three attempts")
	require.EqualValues(t, 1, computed.Load(), "no answer, nothing computed")
}

// Prepare tells a passing outage (ErrUnavailable: the worker waits) from
// what waiting cannot mend: a model the engine does not list, vectors of
// another length, a refused key.
func TestPrepareVerdicts(t *testing.T) {
	ol := ollamatest.Shared(t)

	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()
	err := engineAt(t, downURL+"/v1", nil).Prepare(context.Background())
	require.ErrorIs(t, err, engine.ErrUnavailable)

	err = engineAt(t, ol.URL+"/v1", func(o *openai.Options) { o.Model = "no-such-model" }).Prepare(context.Background())
	require.ErrorIs(t, err, engine.ErrModelNotFound)
	require.Contains(t, err.Error(), ol.Model, "the error lists the models the engine has")

	err = engineAt(t, ol.URL+"/v1", func(o *openai.Options) { o.Dims = ol.Dims + 1 }).Prepare(context.Background())
	require.Error(t, err)
	require.False(t, errors.Is(err, engine.ErrUnavailable), "waiting cannot mend the length: %v", err)
	require.Contains(t, err.Error(), "EMBED_DIMENSIONS")

	var auth atomic.Value
	locked := standIn(t, func(w http.ResponseWriter, r *http.Request, _ []byte) bool {
		auth.Store(r.Header.Get("Authorization"))
		if r.Header.Get("Authorization") != "Bearer right" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":{"message":"invalid api key"}}`)
			return true
		}
		return false
	})
	err = engineAt(t, locked.URL+"/v1", func(o *openai.Options) { o.APIKey = "wrong" }).Prepare(context.Background())
	require.Error(t, err)
	require.False(t, errors.Is(err, engine.ErrUnavailable), "%v", err)
	require.Contains(t, err.Error(), "EMBED_BACKEND_API_KEY")
	require.NotContains(t, err.Error(), "wrong", "the key is never in a message")
	require.NoError(t, engineAt(t, locked.URL+"/v1", func(o *openai.Options) { o.APIKey = "right" }).Prepare(context.Background()))
	require.Equal(t, "Bearer right", auth.Load())
}

// An engine that does not answer base64 (it refuses encoding_format, or
// ignores it and sends floats) is read as floats, to the same vectors.
func TestFloatsWhereBase64IsRefused(t *testing.T) {
	var mu sync.Mutex
	var formats []string
	srv := standIn(t, func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		var req struct {
			EncodingFormat string `json:"encoding_format"`
		}
		_ = json.Unmarshal(body, &req)
		if r.URL.Path == "/v1/embeddings" {
			mu.Lock()
			formats = append(formats, req.EncodingFormat)
			mu.Unlock()
		}
		if req.EncodingFormat == "base64" {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":{"message":"encoding_format base64 is not supported"}}`)
			return true
		}
		return false
	})
	ep := engineAt(t, srv.URL+"/v1", nil)
	require.NoError(t, ep.Prepare(context.Background()))
	out, err := ep.EmbedAll(context.Background(), texts)
	require.NoError(t, err)
	require.Equal(t, direct(t, texts), out.Vectors)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"base64", "float", "float"}, formats)
}

// A reply that does not fit is never passed on: another model than the
// one asked for, an index twice, a non-finite value.
func TestRepliesAreChecked(t *testing.T) {
	var mode atomic.Value
	mode.Store("")
	srv := standIn(t, func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		m := mode.Load().(string)
		if r.URL.Path != "/v1/embeddings" || m == "" {
			return false
		}
		n := len(inputs(body))
		data := make([]map[string]any, n)
		for i := range data {
			data[i] = map[string]any{"index": i, "embedding": make([]float32, ollamatest.Shared(t).Dims)}
		}
		reply := map[string]any{"model": ollamatest.Shared(t).Model + ":latest", "data": data}
		switch m {
		case "model":
			reply["model"] = "another-model"
		case "index":
			data[n-1]["index"] = 0
		case "nan":
			v := make([]float32, ollamatest.Shared(t).Dims)
			v[0] = float32(math.NaN())
			data[0]["embedding"] = base64.StdEncoding.EncodeToString(vector.Append(nil, v))
		}
		_ = json.NewEncoder(w).Encode(reply)
		return true
	})
	ep := engineAt(t, srv.URL+"/v1", nil)
	require.NoError(t, ep.Prepare(context.Background()))
	for _, m := range []string{"model", "index", "nan"} {
		mode.Store(m)
		_, err := ep.EmbedAll(context.Background(), texts)
		require.ErrorIs(t, err, engine.ErrUnavailable, m)
	}
}

// Through the whole queue: a worker driving the real Ollama's /v1 as an
// openai engine answers the vectors Ollama's /api/embed gives, for
// requests sent concurrently (several calls in flight to the engine).
func TestThroughTheQueue(t *testing.T) {
	ol := ollamatest.Shared(t)
	b := systemtest.Setup(t, systemtest.Options{Dims: ol.Dims})
	ep := engineAt(t, ol.URL+"/v1", nil)
	b.StartWorker(systemtest.WorkerOptions{ID: "openai", Models: []worker.Model{ep}, CallsPerHost: 4, BatchSize: 8})
	b.WaitReady(1)
	want := direct(t, texts)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			res, err := b.Embed(30*time.Second, texts[i%len(texts)])
			require.NoError(t, err)
			require.Equal(t, want[i%len(texts)], res.Vectors[0])
			require.Equal(t, ep.Fingerprint(), res.Fingerprints[0], "the engine's fingerprint travels with the vector")
			require.Positive(t, res.Tokens)
		})
	}
	wg.Wait()
}
