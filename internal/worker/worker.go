// Package worker is the compute side of the pipeline: it pulls jobs from
// the JetStream work queue, merges them into batches, calls Ollama on every
// endpoint it drives, replies to the requester and acks. It holds no state
// but what is in flight; run as many as there are GPUs.
package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/deadletter"
	"github.com/waywo/embed/internal/wire"
)

// Worker pulls jobs, merges them into batches, calls the model, replies and
// acks. Delivery is at least once: a job is acked only after its reply is
// published, and a reply for a job the requester no longer waits for is
// dropped by the requester.
type Worker struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	opts Options
	log  *zap.Logger

	runners   []*runner
	dead      *deadletter.Writer
	cancelled *cancels
	tokens    *tokenRate
	idle      chan *runner // an endpoint with no call in flight
	extra     chan *runner // an endpoint that can take one more call

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when any runner's readiness changes
	freed   chan struct{} // closed and replaced when a runner finishes a call
}

// runner is one model server and its state.
type runner struct {
	model Model
	work  chan batch // one batch after the runner was taken from idle or extra

	// guarded by Worker.mu
	ready    bool
	reason   string
	busy     int  // calls in flight
	calling  int  // calls on the server (until it has computed them)
	prepared bool // Prepare succeeded: probes keep it ready from then on
	// stalled: the server stopped answering; it is ready again only once
	// a test embedding answers. stall ends when a stall is seen, so that
	// the calls in flight give their batches back, and is then made anew.
	stalled     bool
	stall       context.Context
	cancelStall context.CancelFunc
	perInput    time.Duration // what an input took in recent calls (a moving average)
	pace        *pace         // the calls sent to it, for the handover
	restUntil   time.Time     // a 429 asked to leave it alone until then
	answered    time.Time     // when it last answered a call
}

// pending is a fetched, decoded job not yet answered.
type pending struct {
	msg       jetstream.Msg
	job       wire.Job
	lane      wire.Lane
	published time.Time         // when the api stored it (zero: unknown)
	tokens    int               // estimated, for EMBED_BATCH_TOKENS
	trace     trace.SpanContext // the publish's span, from the job's traceparent
}

type batch struct {
	items  []*pending
	reason FlushReason
}

// New returns a worker over models. Run prepares them (waiting while a
// server cannot be reached); until then they are not ready.
func New(nc *nats.Conn, js jetstream.JetStream, models []Model, opts Options, log *zap.Logger) *Worker {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ProbeTimeout <= 0 {
		opts.ProbeTimeout = 2 * time.Second
	}
	if opts.Observer == nil {
		opts.Observer = ObserverFuncs{}
	}
	opts.CallsPerHost = max(opts.CallsPerHost, 1)
	w := &Worker{
		nc: nc, js: js, opts: opts,
		log:     log.Named("worker").With(zap.String("worker", opts.ID)),
		idle:    make(chan *runner),
		extra:   make(chan *runner),
		changed: make(chan struct{}),
		freed:   make(chan struct{}),
	}
	w.cancelled = newCancels(opts.Now)
	w.tokens = newTokenRate()
	w.dead = &deadletter.Writer{JS: js, Now: opts.Now, Log: w.log}
	for _, m := range models {
		r := &runner{model: m, work: make(chan batch, 1), reason: "preparing the model at " + m.Host(), pace: &pace{lead: opts.HandoverLead}}
		r.stall, r.cancelStall = context.WithCancel(context.Background())
		w.runners = append(w.runners, r)
	}
	return w
}

// Run works until ctx ends, then stops in two phases: it stops fetching and
// hands back jobs it holds but has not started, lets batches in flight
// finish, reply and ack for up to ShutdownTimeout, and finally announces it
// is leaving. The caller drains the connection afterwards.
//
// It prepares its models meanwhile, waiting for servers that cannot be
// reached yet, and for the jobs streams (the api creates them): it can
// start before either. A model that is missing or unfit ends it with the
// reason.
func (w *Worker) Run(ctx context.Context) error {
	if len(w.runners) == 0 {
		return errors.New("worker has no endpoints")
	}
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	ping, err := w.nc.Subscribe(wire.PingSubject, func(*nats.Msg) { w.announce(false) })
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", wire.PingSubject, err)
	}
	cancel, err := w.nc.Subscribe(wire.CancelSubject, w.cancelled.onCancel)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", wire.CancelSubject, err)
	}
	defer func() { _ = cancel.Unsubscribe() }()

	var wg sync.WaitGroup
	wg.Go(func() { w.heartbeatLoop(ctx) })
	for _, r := range w.runners {
		wg.Go(func() {
			if err := w.prepare(ctx, r); err != nil {
				fail(&fatalError{err})
			}
		})
	}
	cons := map[wire.Lane]jetstream.Consumer{}
	var natsVersion string
	err = broker.Retry(ctx, "creating the workers' consumers (the api creates their streams)", w.log, func(ctx context.Context) error {
		// Pull priorities need nats-server 2.12, known once connected;
		// before it, the queries that arrive while the endpoints are busy
		// are fetched when one frees.
		natsVersion = w.nc.ConnectedServerVersion()
		if natsVersion == "" {
			return errors.New("not connected to NATS yet")
		}
		w.opts.Consumer.Prioritized = serverAtLeast(natsVersion, 2, 12)
		for _, lane := range wire.Lanes {
			c, err := EnsureWorkersConsumer(ctx, w.js, lane, w.opts.Consumer)
			if err != nil {
				return err
			}
			cons[lane] = c
		}
		return nil
	})
	if err == nil {
		// Model calls outlive the stop signal until the shutdown timeout.
		workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
		defer cancelWork()
		for _, r := range w.runners {
			wg.Go(func() { w.runLoop(ctx, workCtx, r) })
		}
		w.log.Info("worker started", zap.Int("endpoints", len(w.runners)), zap.Int("calls_per_host", w.opts.CallsPerHost),
			zap.Int("batch_size", w.opts.BatchSize), zap.Bool("prioritized_pulls", w.opts.Consumer.Prioritized))
		if !w.opts.Consumer.Prioritized {
			w.log.Warn("nats-server is older than 2.12: a busy worker may take queries a free one could start at once, and fetches them only when an endpoint frees; upgrade it for pull priorities",
				zap.String("nats_server", natsVersion))
		}
		w.dispatch(ctx, cons)
		w.log.Info("worker stopping: finishing batches in flight", zap.Duration("timeout", w.opts.ShutdownTimeout))
		stopTimer := time.AfterFunc(w.opts.ShutdownTimeout, cancelWork)
		defer stopTimer.Stop()
	}
	wg.Wait()
	_ = ping.Unsubscribe()
	w.announce(true)
	_ = w.nc.Flush()
	var fatal *fatalError
	if errors.As(context.Cause(ctx), &fatal) {
		w.log.Error("worker stopped: a model cannot serve", zap.Error(fatal.err))
		return fatal.err
	}
	w.log.Info("worker stopped")
	return nil
}

// fatalError is what ends a worker by itself: a model that cannot serve.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
