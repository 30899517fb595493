// Package metrics defines the Prometheus series of the api and the worker,
// all prefixed embed_. Each type is a small seam: callers count where the
// event happens, and every method is safe on a nil receiver so metrics stay
// optional.
package metrics

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/waywo/embed/internal/dispatch"
	"github.com/waywo/embed/internal/engine"
	"github.com/waywo/embed/internal/wire"
	"github.com/waywo/embed/internal/worker"
)

const ns = "embed"

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// API counts what the HTTP front door sees.
type API struct {
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	documents *prometheus.CounterVec
	cache     *prometheus.CounterVec
	errors    *prometheus.CounterVec
	search    *prometheus.HistogramVec
}

// Workers reports live and ready workers at scrape time.
type Workers func() (live, ready int)

// NewAPI registers the api's series on reg.
func NewAPI(reg prometheus.Registerer, workers Workers, queueStats func(wire.Lane) (dispatch.Stats, error)) *API {
	m := &API{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "http", Name: "request_duration_seconds",
			Help:    "HTTP request latency by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route"}),
		documents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "documents_total",
			Help: "Documents asked for, by input type.",
		}, []string{"input_type"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "cache", Name: "lookups_total",
			Help: "Embedding cache lookups by result (hit or miss).",
		}, []string{"result"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "http", Name: "errors_total",
			Help: "Failed HTTP requests by error kind.",
		}, []string{"kind"}),
		search: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "search", Name: "duration_seconds",
			Help:    "Time a search took over the index, the query already embedded, by kind (search or similar).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"kind"}),
	}
	reg.MustRegister(m.requests, m.latency, m.documents, m.cache, m.errors, m.search)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: ns, Name: "workers_live", Help: "Workers heard from within their heartbeat TTL.",
	}, func() float64 { live, _ := workers(); return float64(live) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: ns, Name: "workers_ready", Help: "Live workers that can embed now.",
	}, func() float64 { _, ready := workers(); return float64(ready) }))
	reg.MustRegister(&queueCollector{stats: queueStats})
	for _, k := range []string{"search", "similar"} {
		m.search.WithLabelValues(k) // at 0 from the start
	}
	return m
}

// Request counts one finished HTTP request.
func (m *API) Request(route string, code int, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.latency.WithLabelValues(route).Observe(d.Seconds())
}

// Search counts one search over the index and how long it took.
func (m *API) Search(kind string, d time.Duration) {
	if m == nil {
		return
	}
	m.search.WithLabelValues(kind).Observe(d.Seconds())
}

// Documents counts documents asked for.
func (m *API) Documents(inputType string, n int) {
	if m == nil {
		return
	}
	m.documents.WithLabelValues(inputType).Add(float64(n))
}

// Cache counts cache lookups.
func (m *API) Cache(hits, misses int) {
	if m == nil {
		return
	}
	m.cache.WithLabelValues("hit").Add(float64(hits))
	m.cache.WithLabelValues("miss").Add(float64(misses))
}

// Error counts a failed request by kind (the error code in the response).
func (m *API) Error(kind string) {
	if m == nil {
		return
	}
	m.errors.WithLabelValues(kind).Inc()
}

type queueCollector struct {
	stats func(wire.Lane) (dispatch.Stats, error)
}

var (
	lane            = []string{"lane"}
	queueMessages   = prometheus.NewDesc(ns+"_queue_messages", "Jobs waiting in a lane's stream (EMBED_JOBS, EMBED_JOBS_BULK).", lane, nil)
	queueBytes      = prometheus.NewDesc(ns+"_queue_bytes", "Bytes of jobs in a lane's stream.", lane, nil)
	queueAckPending = prometheus.NewDesc(ns+"_queue_ack_pending", "Jobs of a lane delivered to workers and not yet acked.", lane, nil)
	queueWaiting    = prometheus.NewDesc(ns+"_queue_waiting_pulls", "Pull requests of idle workers waiting for a lane's jobs.", lane, nil)
	queueUp         = prometheus.NewDesc(ns+"_queue_up", "1 when the lane's state could be read at this scrape.", lane, nil)
)

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{queueMessages, queueBytes, queueAckPending, queueWaiting, queueUp} {
		ch <- d
	}
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	for _, l := range wire.Lanes {
		s, err := c.stats(l)
		if err != nil {
			ch <- prometheus.MustNewConstMetric(queueUp, prometheus.GaugeValue, 0, string(l))
			continue
		}
		ch <- prometheus.MustNewConstMetric(queueUp, prometheus.GaugeValue, 1, string(l))
		ch <- prometheus.MustNewConstMetric(queueMessages, prometheus.GaugeValue, float64(s.Messages), string(l))
		ch <- prometheus.MustNewConstMetric(queueBytes, prometheus.GaugeValue, float64(s.Bytes), string(l))
		ch <- prometheus.MustNewConstMetric(queueAckPending, prometheus.GaugeValue, float64(s.AckPending), string(l))
		ch <- prometheus.MustNewConstMetric(queueWaiting, prometheus.GaugeValue, float64(s.Waiting), string(l))
	}
}

// Worker counts what a worker does. It implements worker.Observer.
type Worker struct {
	batchDocs  prometheus.Histogram
	batchJobs  prometheus.Histogram
	flushes    *prometheus.CounterVec
	batchTime  prometheus.Histogram
	modelCalls *prometheus.HistogramVec
	handovers  *prometheus.CounterVec
	tokens     prometheus.Counter
	embedded   prometheus.Counter
	errors     *prometheus.CounterVec
	laneDocs   *prometheus.CounterVec
	laneWait   *prometheus.HistogramVec
}

var _ worker.Observer = (*Worker)(nil)

// NewWorker registers a worker's series on reg.
func NewWorker(reg prometheus.Registerer) *Worker {
	m := &Worker{
		batchDocs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "batch", Name: "documents",
			Help:    "Documents per batch sent to the model.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
		batchJobs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "batch", Name: "jobs",
			Help:    "Jobs merged into one batch.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
		}),
		flushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "batch", Name: "flushes_total",
			Help: "Batches by why they were sent: full, drain (queue empty), wait (EMBED_BATCH_WAIT).",
		}, []string{"reason"}),
		batchTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "batch", Name: "duration_seconds",
			Help:    "Time to embed one batch, all its model calls included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}),
		modelCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "model", Name: "call_duration_seconds",
			Help:    "Latency of one model call (Ollama's /api/embed, an engine's /v1/embeddings), by endpoint and result.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"endpoint", "result"}),
		handovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "model", Name: "handovers_total",
			Help: "Batches sent to a model server while it still computed the call before (EMBED_HANDOVER_LEAD), by endpoint: over the batches sent, the share of calls its server did not wait for.",
		}, []string{"endpoint"}),
		tokens: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "model", Name: "tokens_total",
			Help: "Prompt tokens embedded, as the model server reports them.",
		}),
		embedded: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "model", Name: "documents_total",
			Help: "Documents embedded by the model.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "worker", Name: "errors_total",
			Help: "Job failures by kind: retried, failed, rejected, bad_job, reply_failed, cancelled (dropped unstarted: its requester stopped waiting), handed_back (given back to the queue from a stalled or busy server); and fetch_failed, a failed fetch of jobs (the stream unavailable; the worker backs off).",
		}, []string{"kind"}),
		laneDocs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "batch", Name: "lane_documents_total",
			Help: "Documents sent to the model by lane (interactive, bulk): each lane's share of the batches.",
		}, []string{"lane"}),
		laneWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "lane", Name: "wait_seconds",
			Help:    "Time from a job's publish to the batch that took it to the model, by lane.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"lane"}),
	}
	reg.MustRegister(m.batchDocs, m.batchJobs, m.flushes, m.batchTime, m.modelCalls, m.handovers, m.tokens, m.embedded, m.errors, m.laneDocs, m.laneWait)
	// Every kind at 0 from the start, so that rate() and alerts over them
	// work before the first failure.
	for _, k := range []string{"retried", "failed", "rejected", "bad_job", "reply_failed", "cancelled", "handed_back", "fetch_failed"} {
		m.errors.WithLabelValues(k)
	}
	return m
}

// Batch counts one batch.
func (m *Worker) Batch(b worker.BatchInfo) {
	if m == nil {
		return
	}
	m.batchDocs.Observe(float64(b.Documents))
	m.batchJobs.Observe(float64(b.Jobs))
	m.flushes.WithLabelValues(string(b.Reason)).Inc()
	m.batchTime.Observe(b.Took.Seconds())
	if b.HandedOver {
		m.handovers.WithLabelValues(b.Endpoint).Inc()
	}
	m.laneDocs.WithLabelValues(string(wire.LaneInteractive)).Add(float64(b.Documents - b.BulkDocuments))
	m.laneDocs.WithLabelValues(string(wire.LaneBulk)).Add(float64(b.BulkDocuments))
	for _, w := range b.Waits {
		m.laneWait.WithLabelValues(string(w.Lane)).Observe(w.Wait.Seconds())
	}
	if b.Err == nil {
		m.tokens.Add(float64(b.Tokens))
		m.embedded.Add(float64(b.Documents - b.Rejected))
	}
}

// JobError counts a job that did not simply succeed.
func (m *Worker) JobError(kind string) {
	if m == nil {
		return
	}
	m.errors.WithLabelValues(kind).Inc()
}

// ModelCall counts one Ollama call.
func (m *Worker) ModelCall(endpoint string, d time.Duration, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
		if errors.Is(err, engine.ErrRejected) {
			result = "rejected"
		}
	}
	m.modelCalls.WithLabelValues(endpoint, result).Observe(d.Seconds())
}

// Sync counts what the project sync does.
type Sync struct {
	projects    *prometheus.CounterVec
	deadLetters prometheus.Counter
	reconQueued prometheus.Counter
	reconRounds *prometheus.CounterVec
	fetchFailed prometheus.Counter
}

// NewSync registers the sync's series on reg; backlog, when set, reports
// the project events waiting in their stream at scrape time.
func NewSync(reg prometheus.Registerer, backlog func() (uint64, error)) *Sync {
	m := &Sync{
		projects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "sync", Name: "projects_total",
			Help: "Projects synced, by outcome: embedded, unchanged, missing, superseded, failed, retry.",
		}, []string{"outcome"}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "sync", Name: "dead_letters_total",
			Help: "Project events dead-lettered (a row that cannot be embedded, or out of attempts).",
		}),
		reconQueued: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "sync", Name: "reconcile_queued_total",
			Help: "Projects the reconcile found missing or stale and queued.",
		}),
		reconRounds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "sync", Name: "reconcile_rounds_total",
			Help: "Reconcile rounds by result (ok or error).",
		}, []string{"result"}),
		fetchFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "sync", Name: "fetch_errors_total",
			Help: "Failed fetches of project events (the stream unavailable; the sync backs off).",
		}),
	}
	reg.MustRegister(m.projects, m.deadLetters, m.reconQueued, m.reconRounds, m.fetchFailed)
	for _, o := range []string{"embedded", "unchanged", "missing", "superseded", "failed", "retry"} {
		m.projects.WithLabelValues(o) // at 0 from the start, as the workers' errors
	}
	if backlog != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: "sync", Name: "events_pending",
			Help: "Project events waiting in the WAYWO_PROJECTS stream.",
		}, func() float64 {
			n, err := backlog()
			if err != nil {
				return -1
			}
			return float64(n)
		}))
	}
	return m
}

// Synced counts n projects with one outcome.
func (m *Sync) Synced(outcome string, n int) {
	if m == nil || n == 0 {
		return
	}
	m.projects.WithLabelValues(outcome).Add(float64(n))
}

// DeadLettered counts one dead-lettered event.
func (m *Sync) DeadLettered() {
	if m == nil {
		return
	}
	m.deadLetters.Inc()
}

// FetchFailed counts one failed fetch of project events.
func (m *Sync) FetchFailed() {
	if m == nil {
		return
	}
	m.fetchFailed.Inc()
}

// Reconciled counts one reconcile round and what it queued.
func (m *Sync) Reconciled(queued int, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.reconRounds.WithLabelValues("error").Inc()
		return
	}
	m.reconRounds.WithLabelValues("ok").Inc()
	m.reconQueued.Add(float64(queued))
}
