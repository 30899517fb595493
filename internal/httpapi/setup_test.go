package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollama/ollama/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/embed"
	"github.com/waywo/embed/internal/httpapi"
	"github.com/waywo/embed/internal/metrics"
	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/queue"
	"github.com/waywo/embed/internal/worker"
)

// bundle is one API over a real in-process nats-server and a real Ollama.
type bundle struct {
	t       *testing.T
	url     string
	ns      *server.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	workers *queue.Registry
	ollama  *ollamatest.Server
	log     *zap.Logger
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
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	ns, err := queue.StartEmbedded(queue.EmbeddedOptions{Addr: "127.0.0.1:0", StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := queue.Connect("", "test-api", ns, config.NATSAuth{}, log)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = queue.EnsureJobsStream(context.Background(), js, queue.StreamLimits{MaxMsgs: 10_000, MaxBytes: 1 << 30})
	require.NoError(t, err)
	reg, err := queue.WatchWorkers(nc, time.Now, log)
	require.NoError(t, err)
	t.Cleanup(func() { _ = reg.Close() })
	client, err := queue.NewClient(nc, js, ol.Dims, time.Now, log)
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Close() })

	if o.requestTimeout == 0 {
		o.requestTimeout = 30 * time.Second
	}
	if o.limits.MaxDocuments == 0 {
		o.limits = httpapi.Limits{MaxDocuments: 1024, MaxDocumentBytes: 128 << 10, MaxBodyBytes: 10 << 20}
	}
	var ready httpapi.Readiness = reg
	if o.readiness != nil {
		ready = o.readiness
	}
	cache, err := embed.NewCache(o.cacheSize)
	require.NoError(t, err)
	promReg := prometheus.NewRegistry()
	apiMetrics := metrics.NewAPI(promReg, func() (int, int) {
		n, _ := reg.Ready()
		return len(reg.Live()), n
	}, func() (queue.Stats, error) { return queue.ReadStats(context.Background(), js) })
	srv := httptest.NewServer(httpapi.New(client, ready, httpapi.Options{
		Model: ol.Model, Dims: ol.Dims, Limits: o.limits, RequestTimeout: o.requestTimeout,
		Broker: func() error { return nil },
		Fingerprint: func() (embed.Fingerprint, bool) {
			fp, _, ok := reg.Fingerprint()
			return fp, ok
		},
		Cache: cache, Metrics: apiMetrics, MetricsHandler: promhttp.HandlerFor(promReg, promhttp.HandlerOpts{}),
	}, log))
	t.Cleanup(srv.Close)
	return &bundle{t: t, url: srv.URL, ns: ns, nc: nc, js: js, workers: reg, ollama: ol, log: log,
		batches: make(chan worker.BatchInfo, 10_000), reg: promReg}
}

type workerOptions struct {
	batchSize int
	truncate  *bool
	ollamaURL string
}

// startWorker runs a worker on its own connection; the returned stop ends it
// gracefully (and is also a cleanup).
func (b *bundle) startWorker(o workerOptions) (stop func()) {
	t := b.t
	t.Helper()
	if o.batchSize == 0 {
		o.batchSize = 32
	}
	if o.ollamaURL == "" {
		o.ollamaURL = b.ollama.URL
	}
	truncate := true
	if o.truncate != nil {
		truncate = *o.truncate
	}
	wnc, err := queue.Connect("", "test-worker", b.ns, config.NATSAuth{}, b.log)
	require.NoError(t, err)
	b.workerConns = append(b.workerConns, wnc)
	wjs, err := jetstream.New(wnc)
	require.NoError(t, err)
	u, err := url.Parse(o.ollamaURL)
	require.NoError(t, err)
	client := embed.NewOllamaClient(u)
	// The first worker reports to the api's registry, as the in-process
	// worker does; later ones to their own.
	wreg := prometheus.NewRegistry()
	if len(b.workerConns) == 1 {
		wreg = b.reg
	}
	wm := metrics.NewWorker(wreg)
	model := embed.NewModel(embed.NewOllamaEmbedder(u, embed.NewHTTPClient()), o.ollamaURL, embed.ModelOptions{
		Name: b.ollama.Model, Dims: b.ollama.Dims, MaxBatch: o.batchSize,
		Timeout: 30 * time.Second, KeepAlive: -1, Truncate: truncate,
		OnCall: func(inputs int, took time.Duration, err error) {
			b.modelInputs.Add(int64(inputs))
			wm.ModelCall(o.ollamaURL, took, err)
		},
	})
	if o.ollamaURL == b.ollama.URL { // as a configured worker does before its first job
		require.NoError(t, embed.Prepare(context.Background(), client, model, false, b.log))
	}
	w := worker.New(wnc, wjs, []worker.Endpoint{{
		Model: model,
		Probe: func(ctx context.Context, full bool) error {
			_, err := embed.Probe(ctx, client, model, full)
			return err
		},
	}}, worker.Options{
		ID: "w-" + t.Name(), Dims: b.ollama.Dims, QueryTask: "Given a question, retrieve passages that answer the question",
		BatchSize: o.batchSize, Consumer: queue.ConsumerOptions{AckWait: 30 * time.Second, MaxDeliver: 5},
		Limits:            queue.StreamLimits{MaxMsgs: 10_000, MaxBytes: 1 << 30},
		HeartbeatInterval: 50 * time.Millisecond, ProbeTimeout: 500 * time.Millisecond,
		ShutdownTimeout: 10 * time.Second,
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
	}, b.log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			require.NoError(t, <-done)
			_ = wnc.Drain()
			wnc.Close()
		})
	}
	t.Cleanup(stop)
	return stop
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
	resp, err := embed.NewOllamaClient(u).Embed(context.Background(), &api.EmbedRequest{Model: b.ollama.Model, Input: texts})
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
		s, err := b.js.Stream(context.Background(), queue.JobsStream)
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
