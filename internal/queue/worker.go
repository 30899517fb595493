package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/embed"
)

// Endpoint is one Ollama a worker drives. Ollama computes an embedding
// model's inputs one after another, so throughput grows with endpoints, not
// with concurrent calls to one; a second call in flight
// (WorkerOptions.CallsPerEndpoint) only lets the next batch wait in
// Ollama's queue while the worker reads, checks and answers the one before.
type Endpoint struct {
	Model *embed.Model
	// Probe checks the endpoint answers; full also checks it has the model.
	Probe func(ctx context.Context, full bool) error
}

// WorkerOptions configure a worker.
type WorkerOptions struct {
	ID        string
	Dims      int
	QueryTask string // instruction for query inputs
	BatchSize int
	BatchWait time.Duration
	// CallsPerEndpoint is how many model calls an endpoint has in flight at
	// most (default 1). A batch goes to an endpoint with none in flight if
	// there is one; it queues behind another call only when it is full, so
	// under light load batches keep growing while the model computes.
	CallsPerEndpoint  int
	Consumer          ConsumerOptions
	Limits            StreamLimits
	HeartbeatInterval time.Duration
	ProbeTimeout      time.Duration // default 2s
	ShutdownTimeout   time.Duration
	Now               func() time.Time
	// Observer, when set, is told about every batch and every job that did
	// not simply succeed: the seam for metrics and for tests.
	Observer Observer
}

// Observer is what a worker reports to; metrics.Worker is one.
type Observer interface {
	Batch(BatchInfo)
	// JobError counts a job by kind: retried, failed, rejected, bad_job,
	// reply_failed.
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
	Reason    embed.FlushReason
	Calls     int // Ollama calls, bisection of rejected inputs included
	Rejected  int // documents the model refused
	Tokens    int // prompt tokens Ollama reported
	Took      time.Duration
	Err       error
}

type batch struct {
	items  []*pending
	reason embed.FlushReason
}

// Worker pulls jobs, merges them into batches, calls the model, replies and
// acks. Delivery is at least once: a job is acked only after its reply is
// published, and a reply for a job the requester no longer waits for is
// dropped by the requester.
type Worker struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	opts WorkerOptions
	log  *zap.Logger

	runners []*runner
	idle    chan *runner // an endpoint with no call in flight
	extra   chan *runner // an endpoint that can take one more call

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when any runner's readiness changes
}

// runner is one endpoint and its state.
type runner struct {
	ep   Endpoint
	work chan batch // one batch after the runner was taken from idle or extra

	// guarded by Worker.mu
	ready  bool
	reason string
	busy   int // calls in flight
}

// pending is a fetched, decoded job not yet answered.
type pending struct {
	msg jetstream.Msg
	job Job
}

// NewWorker returns a worker over endpoints, which must already be prepared
// (model present and loaded): they start ready.
func NewWorker(nc *nats.Conn, js jetstream.JetStream, endpoints []Endpoint, opts WorkerOptions, log *zap.Logger) *Worker {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ProbeTimeout <= 0 {
		opts.ProbeTimeout = 2 * time.Second
	}
	if opts.Observer == nil {
		opts.Observer = ObserverFuncs{}
	}
	opts.CallsPerEndpoint = max(opts.CallsPerEndpoint, 1)
	w := &Worker{
		nc: nc, js: js, opts: opts,
		log:     log.Named("worker").With(zap.String("worker", opts.ID)),
		idle:    make(chan *runner),
		extra:   make(chan *runner),
		changed: make(chan struct{}),
	}
	for _, ep := range endpoints {
		w.runners = append(w.runners, &runner{ep: ep, work: make(chan batch, 1), ready: true})
	}
	return w
}

// Run works until ctx ends, then stops in two phases: it stops fetching and
// hands back jobs it holds but has not started, lets batches in flight
// finish, reply and ack for up to ShutdownTimeout, and finally announces it
// is leaving. The caller drains the connection afterwards.
func (w *Worker) Run(ctx context.Context) error {
	if len(w.runners) == 0 {
		return errors.New("worker has no endpoints")
	}
	cons, err := EnsureWorkersConsumer(ctx, w.js, w.opts.Limits, w.opts.Consumer)
	if err != nil {
		return err
	}
	if err := EnsureDeadLetters(ctx, w.js); err != nil {
		return err
	}
	ping, err := w.nc.Subscribe(PingSubject, func(*nats.Msg) { w.announce(false) })
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", PingSubject, err)
	}

	// Model calls outlive the stop signal until the shutdown timeout.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	var wg sync.WaitGroup
	for _, r := range w.runners {
		wg.Go(func() { w.runLoop(ctx, workCtx, r) })
	}
	wg.Go(func() { w.heartbeatLoop(ctx) })
	w.log.Info("worker started", zap.Int("endpoints", len(w.runners)), zap.Int("calls_per_endpoint", w.opts.CallsPerEndpoint),
		zap.Int("batch_size", w.opts.BatchSize))

	w.dispatch(ctx, cons)

	w.log.Info("worker stopping: finishing batches in flight", zap.Duration("timeout", w.opts.ShutdownTimeout))
	stopTimer := time.AfterFunc(w.opts.ShutdownTimeout, cancelWork)
	wg.Wait()
	stopTimer.Stop()
	_ = ping.Unsubscribe()
	w.announce(true)
	_ = w.nc.Flush()
	w.log.Info("worker stopped")
	return nil
}

// dispatch is the loop that owns the batcher: it fetches the next batch while
// the endpoints compute, then hands it to the first idle one.
func (w *Worker) dispatch(ctx context.Context, cons jetstream.Consumer) {
	b := embed.NewBatcher[*pending](w.opts.BatchSize, w.opts.BatchWait, w.opts.Now)
	var held []*pending // fetched but did not fit the batch
	defer func() { w.handBack(append(b.Flush(), held...)) }()

	for ctx.Err() == nil {
		if ch, ok := w.anyReady(); !ok {
			// Take no work that no endpoint can do; let other workers have it.
			w.handBack(append(b.Flush(), held...))
			held = nil
			select {
			case <-ch:
			case <-ctx.Done():
			}
			continue
		}
		for len(held) > 0 && b.Add(held[0], len(held[0].job.Documents)) {
			held = held[1:]
		}
		drained := false
		if b.Len() == 0 {
			p, behind := w.fetchOne(ctx, cons)
			if p == nil {
				continue
			}
			b.Add(p, len(p.job.Documents))
			// A lone request goes to the model without another round trip
			// to the server to look for company.
			drained = behind == 0
		}
		if !drained {
			held, drained = w.fill(cons, b, held)
		}

		r, waited := w.awaitIdle(ctx, b, held)
		if r == nil {
			continue // stopping, or no endpoint ready: the loop top hands back
		}
		if waited || !drained {
			// Jobs may have arrived while the endpoints were busy. When an
			// endpoint was idle and the queue just came up empty, another
			// look would only add a round trip to a lone request.
			held, _ = w.fill(cons, b, held)
		}
		reason := embed.FlushDrain
		if wait := b.Until(); wait > 0 && !b.Full() && len(held) == 0 {
			held = w.fillWait(cons, b, held, wait)
			reason = embed.FlushWait
		}
		if b.Full() || len(held) > 0 {
			reason = embed.FlushFull
		}
		r.work <- batch{items: b.Flush(), reason: reason}
	}
}

// fetchOne blocks up to a second for one job. behind is how many jobs the
// stream held for the consumer after it, as its delivery says (1 when it
// does not say).
func (w *Worker) fetchOne(ctx context.Context, cons jetstream.Consumer) (got *pending, behind uint64) {
	mb, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		w.log.Warn("fetch failed", zap.Error(err))
		select { // do not spin while NATS is away
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		return nil, 0
	}
	behind = 1
	for m := range mb.Messages() {
		if p := w.accept(m); p != nil {
			got = p
			if md, err := m.Metadata(); err == nil {
				behind = md.NumPending
			}
		}
	}
	if err := mb.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		w.log.Warn("fetch ended with error", zap.Error(err))
	}
	return got, behind
}

// fill adds what the queue has right now, without waiting, until the batch
// is full. What does not fit is returned to be first in the next batch;
// drained says the queue had nothing more.
func (w *Worker) fill(cons jetstream.Consumer, b *embed.Batcher[*pending], held []*pending) (_ []*pending, drained bool) {
	for len(held) == 0 && !b.Full() {
		want := min(b.Room(), 16)
		mb, err := cons.FetchNoWait(want)
		if err != nil {
			w.log.Warn("fetch failed", zap.Error(err))
			return held, false
		}
		n := 0
		for m := range mb.Messages() {
			n++
			if p := w.accept(m); p != nil && (len(held) > 0 || !b.Add(p, len(p.job.Documents))) {
				held = append(held, p)
			}
		}
		if n < want {
			return held, true // the queue is empty for now
		}
	}
	return held, false
}

// fillWait lingers up to wait for more jobs when EMBED_BATCH_WAIT is set.
func (w *Worker) fillWait(cons jetstream.Consumer, b *embed.Batcher[*pending], held []*pending, wait time.Duration) []*pending {
	mb, err := cons.Fetch(min(b.Room(), 16), jetstream.FetchMaxWait(wait))
	if err != nil {
		return held
	}
	for m := range mb.Messages() {
		if p := w.accept(m); p != nil && (len(held) > 0 || !b.Add(p, len(p.job.Documents))) {
			held = append(held, p)
		}
	}
	return held
}

// accept decodes a fetched message. Malformed jobs are terminated (and their
// requester told, when the reply subject is readable); jobs whose requester
// has given up are acked unanswered.
func (w *Worker) accept(m jetstream.Msg) *pending {
	job, err := DecodeJob(m.Headers(), m.Data())
	if err != nil {
		w.log.Error("terminating malformed job", zap.String("request_id", job.RequestID), zap.Int("bytes", len(m.Data())), zap.Error(err))
		if validSubject(job.ReplyTo) {
			w.reply(job.ReplyTo, Reply{Err: &ReplyError{Code: StatusBadJob, Message: err.Error(), Index: -1}})
		}
		w.deadLetter(m, "malformed job: "+err.Error())
		_ = m.TermWithReason(truncate(err.Error(), 200))
		w.opts.Observer.JobError("bad_job")
		return nil
	}
	if !job.Deadline.IsZero() && w.opts.Now().After(job.Deadline) {
		w.log.Debug("dropping expired job", zap.String("request_id", job.RequestID), zap.Time("deadline", job.Deadline))
		_ = m.Ack()
		return nil
	}
	return &pending{msg: m, job: job}
}

// awaitIdle waits for a ready endpoint to take the batch — one with no call
// in flight if there is one now, one with room for another call if the
// batch is full — telling JetStream the held jobs are in progress meanwhile.
// It returns nil when stopping or when no endpoint is ready any more.
func (w *Worker) awaitIdle(ctx context.Context, b *embed.Batcher[*pending], held []*pending) (r *runner, waited bool) {
	select {
	case r := <-w.idle:
		return r, false
	default:
	}
	var extra chan *runner // nil, never ready, unless the batch is full
	if b.Full() || len(held) > 0 {
		extra = w.extra
	}
	select {
	case r := <-extra:
		return r, false
	default:
	}
	tick := time.NewTicker(w.opts.Consumer.AckWait / 3)
	defer tick.Stop()
	for {
		ch, ok := w.anyReady()
		if !ok {
			return nil, true
		}
		select {
		case r := <-w.idle:
			return r, true
		case r := <-extra:
			return r, true
		case <-tick.C:
			for _, p := range b.Items() {
				_ = p.msg.InProgress()
			}
			for _, p := range held {
				_ = p.msg.InProgress()
			}
		case <-ch:
		case <-ctx.Done():
			return nil, true
		}
	}
}

// handBack returns unstarted jobs to the queue at once, for another worker.
func (w *Worker) handBack(ps []*pending) {
	for _, p := range ps {
		_ = p.msg.Nak()
	}
	if len(ps) > 0 {
		w.log.Info("handed back unstarted jobs", zap.Int("jobs", len(ps)))
	}
}

// runLoop offers r to the dispatcher — on idle while it has no call in
// flight, on extra while it has room for another — and runs what it is
// handed, up to CallsPerEndpoint batches at once. It returns when ctx ends
// and its batches in flight have finished.
func (w *Worker) runLoop(ctx, workCtx context.Context, r *runner) {
	var calls sync.WaitGroup
	defer calls.Wait()
	finished := make(chan struct{}, w.opts.CallsPerEndpoint)
	inFlight := 0
	for {
		ch, ready := w.readiness(r)
		offer := w.idle
		switch {
		case inFlight > 0 && inFlight < w.opts.CallsPerEndpoint:
			offer = w.extra
		case inFlight > 0:
			offer = nil // full: wait for a call to finish
		}
		if !ready {
			offer = nil
		}
		select {
		case offer <- r:
			if b := <-r.work; len(b.items) > 0 {
				inFlight++
				calls.Go(func() {
					w.process(ctx, workCtx, r, b)
					finished <- struct{}{}
				})
			}
		case <-finished:
			inFlight--
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// process embeds one batch on r and answers every job in it.
func (w *Worker) process(ctx, workCtx context.Context, r *runner, b batch) {
	w.setBusy(r, +1)
	defer w.setBusy(r, -1)

	batch := b.items
	var inputs []string
	requests := map[string]bool{}
	for _, p := range batch {
		requests[p.job.RequestID] = true
		for _, d := range p.job.Documents {
			if p.job.InputType == InputQuery {
				d = embed.QueryInput(w.opts.QueryTask, d)
			}
			inputs = append(inputs, d)
		}
	}
	stop := w.keepInProgress(batch)
	start := w.opts.Now()
	// Read before the call: should the probe see a new model during it, the
	// vectors are recorded under the old digest and so re-embedded later,
	// never the other way round.
	fp := r.ep.Model.Fingerprint()
	out, err := r.ep.Model.EmbedAll(workCtx, inputs)
	stop()
	took := w.opts.Now().Sub(start)
	rejected := 0
	for _, e := range out.Rejected {
		if e != nil {
			rejected++
		}
	}
	w.opts.Observer.Batch(BatchInfo{Endpoint: r.ep.Model.Host(), Jobs: len(batch), Requests: len(requests),
		Documents: len(inputs), Reason: b.reason, Calls: out.Calls, Rejected: rejected, Tokens: out.Tokens,
		Took: took, Err: err})

	if err != nil {
		w.log.Warn("model call failed", zap.String("ollama", r.ep.Model.Host()), zap.Int("jobs", len(batch)),
			zap.Int("documents", len(inputs)), zap.Duration("took", took), zap.Error(err))
		w.setReady(r, false, err.Error())
		stopping := ctx.Err() != nil
		for _, p := range batch {
			w.retry(p, err, stopping)
		}
		return
	}
	w.log.Debug("batch embedded", zap.String("ollama", r.ep.Model.Host()), zap.Int("jobs", len(batch)),
		zap.Int("requests", len(requests)), zap.Int("documents", len(inputs)), zap.String("reason", string(b.reason)),
		zap.Int("calls", out.Calls), zap.Duration("took", took))

	at := 0
	for _, p := range batch {
		n := len(p.job.Documents)
		rep := Reply{Worker: w.opts.ID, Model: r.ep.Model.Name(), Fingerprint: fp, Vectors: out.Vectors[at : at+n]}
		for i, rej := range out.Rejected[at : at+n] {
			if rej != nil {
				rep = Reply{Worker: w.opts.ID, Model: r.ep.Model.Name(), Err: &ReplyError{Code: StatusRejected, Message: rej.Error(), Index: i}}
				w.log.Info("document rejected by the model", zap.String("request_id", p.job.RequestID),
					zap.Int("document", p.job.Offset+i), zap.Error(rej))
				w.opts.Observer.JobError("rejected")
				break
			}
		}
		if rep.Err == nil && len(batch) == 1 {
			rep.Tokens = out.Tokens
		} else if rep.Err == nil && len(inputs) > 0 {
			rep.Tokens = out.Tokens * n / len(inputs) // Ollama counts per call, not per input
		}
		at += n
		if err := w.reply(p.job.ReplyTo, rep); err != nil {
			w.opts.Observer.JobError("reply_failed")
			continue // not acked: JetStream redelivers after the ack wait
		}
		if err := p.msg.Ack(); err != nil {
			w.log.Warn("ack failed; the job may run again", zap.String("request_id", p.job.RequestID), zap.Error(err))
		}
	}
}

// retry naks a failed job with a growing delay, or, on its last attempt or
// when its requester will have given up by then, answers it with the error
// and terminates it.
func (w *Worker) retry(p *pending, cause error, stopping bool) {
	md, err := p.msg.Metadata()
	delivered := uint64(1)
	if err == nil {
		delivered = md.NumDelivered
	}
	delay := backoff(delivered)
	last := delivered >= uint64(w.opts.Consumer.MaxDeliver)
	late := !p.job.Deadline.IsZero() && w.opts.Now().Add(delay).After(p.job.Deadline)
	log := w.log.With(zap.String("request_id", p.job.RequestID), zap.Uint64("delivered", delivered))
	switch {
	case stopping:
		_ = p.msg.Nak()
	case last || late:
		msg := fmt.Sprintf("embedding failed after %d attempts: %v", delivered, cause)
		if !last {
			msg = fmt.Sprintf("embedding failed and the request's deadline leaves no time to retry: %v", cause)
		}
		_ = w.reply(p.job.ReplyTo, Reply{Worker: w.opts.ID, Err: &ReplyError{Code: StatusUnavailable, Message: msg, Index: -1}})
		w.deadLetter(p.msg, msg)
		_ = p.msg.TermWithReason(truncate(msg, 200))
		log.Error("job failed", zap.Error(cause), zap.Bool("last_attempt", last))
		w.opts.Observer.JobError("failed")
	default:
		w.opts.Observer.JobError("retried")
		_ = p.msg.NakWithDelay(delay)
		log.Info("job will be retried", zap.Duration("delay", delay), zap.Error(cause))
	}
}

// deadLetter records a job that leaves the queue unanswered by a model,
// with its reason and payload. It waits at most 2 s: the job's fate does
// not depend on it, and a failure is logged.
func (w *Worker) deadLetter(m jetstream.Msg, reason string) {
	var delivered uint64
	if md, err := m.Metadata(); err == nil {
		delivered = md.NumDelivered
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := PublishDeadLetter(ctx, w.js, DeadLetter{
		Kind: "jobs", Subject: m.Subject(), Reason: reason, Deliveries: delivered, Header: m.Headers(), Payload: m.Data(),
	}, w.opts.Now())
	if err != nil {
		w.log.Error("could not store dead letter", zap.String("reason", reason), zap.Error(err))
	}
}

func backoff(delivered uint64) time.Duration {
	d := 500 * time.Millisecond << min(delivered-1, 5)
	return min(d, 10*time.Second)
}

// keepInProgress tells JetStream the batch's jobs are still being worked on
// while a model call runs longer than a third of the ack wait.
func (w *Worker) keepInProgress(batch []*pending) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(w.opts.Consumer.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				for _, p := range batch {
					_ = p.msg.InProgress()
				}
			case <-done:
				return
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func (w *Worker) reply(subject string, r Reply) error {
	if err := w.nc.PublishMsg(r.Msg(subject)); err != nil {
		w.log.Warn("reply not sent", zap.String("subject", subject), zap.Error(err))
		return err
	}
	return nil
}

func (w *Worker) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(w.opts.HeartbeatInterval)
	defer t.Stop()
	w.announce(false)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.probeAll(ctx)
			w.announce(false)
		}
	}
}

// probeAll checks every endpoint concurrently: cheaply when it is ready, and
// for the model too when it is recovering.
func (w *Worker) probeAll(ctx context.Context) {
	var wg sync.WaitGroup
	for _, r := range w.runners {
		_, ready := w.readiness(r)
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, w.opts.ProbeTimeout)
			defer cancel()
			if err := r.ep.Probe(pctx, !ready); err != nil {
				if ctx.Err() == nil {
					w.setReady(r, false, err.Error())
				}
				return
			}
			w.setReady(r, true, "")
		})
	}
	wg.Wait()
}

func (w *Worker) announce(stopping bool) {
	hb := Heartbeat{
		ID:       w.opts.ID,
		Dims:     w.opts.Dims,
		TTL:      3*w.opts.HeartbeatInterval + w.opts.ProbeTimeout,
		Stopping: stopping,
	}
	w.mu.Lock()
	for _, r := range w.runners {
		hb.Model = r.ep.Model.Name()
		hb.Endpoints = append(hb.Endpoints, r.ep.Model.Host())
		if r.ready {
			if !hb.Ready {
				hb.Fingerprint = r.ep.Model.Fingerprint()
			}
			hb.Ready = true
		} else if hb.Reason == "" {
			hb.Reason = r.ep.Model.Host() + ": " + r.reason
		}
		hb.Busy += r.busy
	}
	w.mu.Unlock()
	if hb.Ready {
		hb.Reason = ""
	}
	b, _ := json.Marshal(hb)
	if err := w.nc.Publish(HeartbeatSubject, b); err != nil {
		w.log.Debug("heartbeat not sent", zap.Error(err))
	}
}

// Ready says whether any endpoint can embed now and, if none can, why.
func (w *Worker) Ready() (bool, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	reason := ""
	for _, r := range w.runners {
		if r.ready {
			return true, ""
		}
		if reason == "" {
			reason = r.ep.Model.Host() + ": " + r.reason
		}
	}
	return false, reason
}

func (w *Worker) readiness(r *runner) (<-chan struct{}, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed, r.ready
}

func (w *Worker) anyReady() (<-chan struct{}, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.runners {
		if r.ready {
			return w.changed, true
		}
	}
	return w.changed, false
}

func (w *Worker) setReady(r *runner, ready bool, reason string) {
	w.mu.Lock()
	if r.ready == ready {
		r.reason = reason
		w.mu.Unlock()
		return
	}
	r.ready, r.reason = ready, reason
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
	if ready {
		w.log.Info("endpoint ready again", zap.String("ollama", r.ep.Model.Host()))
	} else {
		w.log.Warn("endpoint not ready", zap.String("ollama", r.ep.Model.Host()), zap.String("reason", reason))
	}
	w.announce(false)
}

func (w *Worker) setBusy(r *runner, delta int) {
	w.mu.Lock()
	r.busy += delta
	w.mu.Unlock()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
