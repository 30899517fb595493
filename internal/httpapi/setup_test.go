package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ollama/ollama/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/dispatch"
	"github.com/waywo/embed/internal/httpapi"
	"github.com/waywo/embed/internal/metrics"
	"github.com/waywo/embed/internal/ollama"
	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/systemtest"
	"github.com/waywo/embed/internal/wire"
	"github.com/waywo/embed/internal/worker"
)

// bundle is one API (httptest) over the shared system (systemtest.Bundle)
// and the real test Ollama.
type bundle struct {
	*systemtest.Bundle
	t       *testing.T
	url     string
	ollama  *ollamatest.Server
	batches chan worker.BatchInfo
	reg     *prometheus.Registry
	// modelInputs counts the inputs every worker sent to Ollama.
	modelInputs atomic.Int64

	workerConns []*nats.Conn
}

type setupOptions struct {
	// readiness replaces the worker registry (to queue requests before any
	// worker runs).
	readiness      httpapi.Readiness
	requestTimeout time.Duration
	limits         httpapi.Limits
	cacheSize      int
}

func setup(t *testing.T, o setupOptions) *bundle {
	t.Helper()
	ol := ollamatest.Shared(t)
	sys := systemtest.Setup(t, systemtest.Options{Dims: ol.Dims})
	if o.requestTimeout == 0 {
		o.requestTimeout = 30 * time.Second
	}
	if o.limits.MaxDocuments == 0 {
		o.limits = httpapi.Limits{MaxDocuments: 1024, MaxDocumentBytes: 128 << 10, MaxBodyBytes: 10 << 20}
	}
	var ready httpapi.Readiness = sys.Workers
	if o.readiness != nil {
		ready = o.readiness
	}
	cache, err := httpapi.NewCache(o.cacheSize)
	require.NoError(t, err)
	promReg := prometheus.NewRegistry()
	apiMetrics := metrics.NewAPI(promReg, func() (int, int) {
		n, _ := sys.Workers.Ready()
		return len(sys.Workers.Live()), n
	}, func(l wire.Lane) (dispatch.Stats, error) { return dispatch.ReadStats(context.Background(), sys.JS, l) })
	srv := httptest.NewServer(httpapi.New(sys.Client, ready, httpapi.Options{
		Model: ol.Model, Dims: ol.Dims, Limits: o.limits, RequestTimeout: o.requestTimeout,
		Broker:      func() error { return nil },
		Fingerprint: sys.Workers.Fingerprint,
		Cache:       cache, Metrics: apiMetrics, MetricsHandler: promhttp.HandlerFor(promReg, promhttp.HandlerOpts{}),
	}, sys.Log))
	t.Cleanup(srv.Close)
	return &bundle{Bundle: sys, t: t, url: srv.URL, ollama: ol, batches: make(chan worker.BatchInfo, 10_000), reg: promReg}
}

type workerOptions struct {
	batchSize int
	truncate  *bool
	ollamaURL string
}

// startWorker runs a worker over the test Ollama (or another at
// ollamaURL); the returned stop ends it gracefully (and is also a cleanup).
func (b *bundle) startWorker(o workerOptions) (stop func()) {
	t := b.t
	t.Helper()
	if o.ollamaURL == "" {
		o.ollamaURL = b.ollama.URL
	}
	// The first worker reports to the api's registry, as the in-process
	// worker does; later ones to their own.
	wreg := prometheus.NewRegistry()
	if len(b.workerConns) == 0 {
		wreg = b.reg
	}
	wm := metrics.NewWorker(wreg)
	ep := b.ollama.Endpoint(t, ollamatest.EndpointOptions{
		URL: o.ollamaURL, MaxBatch: o.batchSize, NoTrunc: o.truncate != nil && !*o.truncate,
		OnCall: func(inputs int, took time.Duration, err error) {
			b.modelInputs.Add(int64(inputs))
			wm.ModelCall(o.ollamaURL, took, err)
		},
	})
	r := b.StartWorker(systemtest.WorkerOptions{
		Models: []worker.Model{ep}, BatchSize: o.batchSize,
		Observer: worker.ObserverFuncs{
			OnBatch: func(bi worker.BatchInfo) {
				wm.Batch(bi)
				select {
				case b.batches <- bi:
				default:
				}
			},
			OnJobError: wm.JobError,
		},
	})
	b.workerConns = append(b.workerConns, r.Conn)
	return r.Stop
}

type embedResponse struct {
	status     int
	Embeddings [][]float32 `json:"embeddings"`
	Error      string      `json:"error"`
	Code       string      `json:"code"`
}

func (b *bundle) post(path, contentType string, body []byte) embedResponse {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.url+path, bytes.NewReader(body))
	require.NoError(b.t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(b.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(b.t, err)
	out := embedResponse{status: resp.StatusCode}
	require.NoError(b.t, json.Unmarshal(raw, &out), "body: %.300s", raw)
	return out
}

func (b *bundle) embed(docs ...string) embedResponse {
	b.t.Helper()
	body, err := json.Marshal(map[string]any{"documents": docs})
	require.NoError(b.t, err)
	return b.post("/embed", "application/json", body)
}

func (b *bundle) health() (int, map[string]any) {
	b.t.Helper()
	resp, err := http.Get(b.url + "/health")
	require.NoError(b.t, err)
	defer resp.Body.Close()
	var m map[string]any
	require.NoError(b.t, json.NewDecoder(resp.Body).Decode(&m))
	return resp.StatusCode, m
}

// waitHealth polls /health until it answers want, within a deadline.
func (b *bundle) waitHealth(want int) map[string]any {
	b.t.Helper()
	var last map[string]any
	require.Eventually(b.t, func() bool {
		var status int
		status, last = b.health()
		return status == want
	}, 10*time.Second, 10*time.Millisecond, "health never became %d; last: %v", want, last)
	return last
}

// direct embeds texts straight through Ollama: the reference vectors.
func (b *bundle) direct(texts ...string) [][]float32 {
	b.t.Helper()
	u, _ := url.Parse(b.ollama.URL)
	resp, err := ollama.NewClient(u).Embed(context.Background(), &api.EmbedRequest{Model: b.ollama.Model, Input: texts})
	require.NoError(b.t, err)
	return resp.Embeddings
}

// alwaysReady lets requests queue while no worker runs yet.
type alwaysReady struct{}

func (alwaysReady) Ready() (int, string) { return 1, "" }

// waitQueued waits until the jobs stream holds n messages.
func (b *bundle) waitQueued(n uint64) {
	b.t.Helper()
	require.Eventually(b.t, func() bool {
		s, err := b.JS.Stream(context.Background(), wire.JobsStream)
		if err != nil {
			return false
		}
		info, err := s.Info(context.Background())
		return err == nil && info.State.Msgs == n
	}, 10*time.Second, 5*time.Millisecond)
}

func requireSameVector(t *testing.T, want, got []float32, msgAndArgs ...any) {
	t.Helper()
	require.Len(t, got, len(want), msgAndArgs...)
	require.InDelta(t, 1.0, ollamatest.Cosine(want, got), 1e-6, msgAndArgs...)
}
