// Options: what a worker is given and what it reports to.

package worker

import (
	"context"
	"time"

	"github.com/waywo/embed/internal/engine"
	"github.com/waywo/embed/internal/vector"
	"github.com/waywo/embed/internal/wire"
)

// Model is one model server a worker drives: *ollama.Endpoint or
// *openai.Endpoint. Ollama computes an embedding model's inputs one after
// another, so its throughput grows with servers, not with concurrent calls
// to one; a second call in flight (Options.CallsPerHost) only lets the next
// batch wait in the server's queue while the worker reads, checks and
// answers the one before. An engine that batches (vLLM, llama-server -np N)
// packs the sequences of several calls in flight into one forward pass.
type Model interface {
	Host() string     // for logs and metrics
	Name() string     // the model's name, reported in replies
	Provider() string // the server's kind in traces: ollama or openai
	// Prepare checks the server has the model fit to serve, and loads it;
	// it fails with engine.ErrUnavailable while the server cannot be
	// reached (the worker waits), otherwise for good (the worker stops).
	Prepare(ctx context.Context) error
	// EmbedAll embeds inputs; a refused input fails alone (Output.Rejected).
	EmbedAll(ctx context.Context, inputs []string) (engine.Output, error)
	// Fingerprint is the model's as last read.
	Fingerprint() vector.Fingerprint
	// Probe checks the server answers and, with full, that it still serves
	// the model fit; it returns the fingerprint from before the probe.
	Probe(ctx context.Context, full bool) (before vector.Fingerprint, err error)
}

// Options configure a worker.
type Options struct {
	ID        string
	Dims      int
	QueryTask string // instruction for query inputs
	BatchSize int
	// BatchTokens, when set, also limits a batch to about this many tokens
	// (EMBED_BATCH_TOKENS), estimated from bytes at the ratio the servers
	// report.
	BatchTokens int
	BatchWait   time.Duration
	// CallsPerHost is how many model calls an endpoint has in flight at
	// most (default 1). A batch goes to an endpoint with none in flight if
	// there is one; it queues behind another call only when it is full, so
	// under light load batches keep growing while the model computes.
	CallsPerHost int
	// HandoverLead, when set, frees a call's place that long before its
	// server is expected to have computed it (EMBED_HANDOVER_LEAD): the
	// next call is on its way while the server finishes, for servers that
	// compute one call at a time. The expectation is learned from the
	// calls' times; until a few calls were seen, a place frees when the
	// server's answer begins.
	HandoverLead      time.Duration
	Consumer          wire.ConsumerOptions
	HeartbeatInterval time.Duration
	ProbeTimeout      time.Duration // default 2s
	// StallTimeout is how long a model call may run, beyond 8 times what
	// its inputs took in earlier calls, before the worker counts its server
	// stalled (EMBED_STALL_TIMEOUT); 0: only probes find a stall.
	StallTimeout    time.Duration
	ShutdownTimeout time.Duration
	Now             func() time.Time
	// Observer, when set, is told about every batch and every job that did
	// not simply succeed: the seam for metrics and for tests.
	Observer Observer
}

// Observer is what a worker reports to; metrics.Worker is one.
type Observer interface {
	Batch(BatchInfo)
	// JobError counts a job by kind: retried, failed, rejected, bad_job,
	// reply_failed, cancelled; and fetch_failed, a fetch that failed (no job).
	JobError(kind string)
	// ModelCall is told about every Ollama call.
	ModelCall(endpoint string, took time.Duration, err error)
}

// ObserverFuncs adapts functions to Observer; nil fields are skipped.
type ObserverFuncs struct {
	OnBatch     func(BatchInfo)
	OnJobError  func(kind string)
	OnModelCall func(endpoint string, took time.Duration, err error)
}

func (o ObserverFuncs) ModelCall(endpoint string, took time.Duration, err error) {
	if o.OnModelCall != nil {
		o.OnModelCall(endpoint, took, err)
	}
}

func (o ObserverFuncs) Batch(b BatchInfo) {
	if o.OnBatch != nil {
		o.OnBatch(b)
	}
}

func (o ObserverFuncs) JobError(kind string) {
	if o.OnJobError != nil {
		o.OnJobError(kind)
	}
}

// BatchInfo describes one batch a worker ran.
type BatchInfo struct {
	Endpoint  string
	Jobs      int
	Requests  int // distinct requests among the jobs
	Documents int
	// BulkDocuments of Documents came from the bulk lane.
	BulkDocuments int
	// Waits are the batch's jobs' times from publish to this batch.
	Waits    []JobWait
	Reason   FlushReason
	Calls    int // Ollama calls, bisection of rejected inputs included
	Rejected int // documents the model refused
	Tokens   int // prompt tokens Ollama reported
	// HandedOver: the batch was sent while its server still computed the
	// call before it (EMBED_HANDOVER_LEAD), so the server did not wait.
	HandedOver bool
	Took       time.Duration
	Err        error
}

// JobWait is how long one job of a lane waited between its publish and
// the batch that took it to the model.
type JobWait struct {
	Lane wire.Lane
	Wait time.Duration
}
