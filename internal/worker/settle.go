// Settling jobs: the model call, replies, retries, dead letters, acks.

package worker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/backoff"
	"github.com/waywo/embed/internal/deadletter"
	"github.com/waywo/embed/internal/engine"
	"github.com/waywo/embed/internal/prompt"
	"github.com/waywo/embed/internal/tracing"
	"github.com/waywo/embed/internal/vector"
	"github.com/waywo/embed/internal/wire"
)

// process embeds one batch on r and answers every job in it: requests
// cancelled meanwhile are dropped, the rest go to the model in one call,
// the batch is counted, and each job is answered and acked (or, when the
// model failed, retried). computed runs once the server has computed the
// batch's vectors, before their reply is read (see engine.WithComputed).
func (w *Worker) process(ctx, workCtx context.Context, r *runner, b batch, computed func()) {
	w.setBusy(r, +1)
	defer w.setBusy(r, -1)
	jobs := w.dropCancelled(b.items)
	if len(jobs) == 0 {
		return
	}
	in := w.modelInputs(jobs)
	// One span per batch, linked to the publish of every job it carries
	// (one batch serves many requests), each link with its job's wait.
	links := make([]trace.Link, 0, len(jobs))
	now := w.opts.Now()
	for _, p := range jobs {
		if p.trace.IsValid() {
			l := trace.Link{SpanContext: p.trace, Attributes: []attribute.KeyValue{attribute.String("embed.request_id", p.job.RequestID), attribute.String("embed.lane", string(p.lane))}}
			if !p.published.IsZero() {
				l.Attributes = append(l.Attributes, attribute.Float64("embed.lane_wait_seconds", now.Sub(p.published).Seconds()))
			}
			links = append(links, l)
		}
	}
	_, span := tracing.Tracer().Start(ctx, "embed batch", trace.WithLinks(links...), trace.WithAttributes(
		attribute.String("embed.worker", w.opts.ID), attribute.String("embed.flush_reason", string(b.reason)),
		attribute.Int("embed.jobs", len(jobs)), attribute.Int("embed.requests", in.requests),
		attribute.Int("embed.documents", len(in.texts)), attribute.Int("embed.bulk_documents", in.bulk)))
	defer span.End()
	start := w.opts.Now()
	// Read before the call: should the probe see a new model during it, the
	// vectors are recorded under the old digest and so re-embedded later,
	// never the other way round.
	fp := r.model.Fingerprint()
	callCtx, stall, done := w.callContext(r, workCtx)
	if stall.Err() != nil {
		done()
		w.giveBack(jobs)
		return
	}
	// The call's place frees once the server has computed it, or, with the
	// handover, just before it is expected to.
	paced := r.pace.begin(w.opts.Now(), len(in.texts), in.tokens)
	go paced.handOver(w.opts.Now, computed)
	callCtx = engine.WithComputed(callCtx, func() {
		paced.end(w.opts.Now(), true)
		computed()
	})
	stop := w.keepInProgress(jobs)
	endWatch := w.watch(r, len(in.texts))
	_, call := tracing.ModelCall(trace.ContextWithSpan(callCtx, span), r.model.Provider(), r.model.Name(), r.model.Host(), len(in.texts))
	out, err := r.model.EmbedAll(callCtx, in.texts)
	paced.end(w.opts.Now(), false)
	endWatch(err == nil)
	tracing.EndModelCall(call, out.Tokens, w.opts.Dims, err)
	done()
	stop()
	took := w.opts.Now().Sub(start)
	if stall.Err() != nil {
		// Stalled during the call: its jobs go to another worker now, and
		// what the call returns, if it ever does, is not used.
		w.giveBack(jobs)
		return
	}
	w.observe(r, jobs, in, b.reason, out, took, paced.behind, err)
	if d, busy := engine.RetryAfter(err); busy {
		// The server asked to be left alone: its batch goes to another
		// server now, and this one takes none until the time is up.
		w.rest(r, d, err)
		w.giveBack(jobs)
		return
	}
	if err == nil {
		w.learn(r, took, len(in.texts))
		w.tokens.learn(out.Tokens, textBytes(in.texts))
	}
	if err != nil {
		w.log.Warn("model call failed", zap.String("ollama", r.model.Host()), zap.Int("jobs", len(jobs)),
			zap.Int("documents", len(in.texts)), zap.Duration("took", took), zap.Error(err))
		w.setReady(r, false, err.Error())
		stopping := ctx.Err() != nil
		for _, p := range jobs {
			w.retry(p, err, stopping)
		}
		return
	}
	w.log.Debug("batch embedded", zap.String("ollama", r.model.Host()), zap.Int("jobs", len(jobs)),
		zap.Int("requests", in.requests), zap.Int("documents", len(in.texts)), zap.Int("bulk_documents", in.bulk),
		zap.String("reason", string(b.reason)), zap.Int("calls", out.Calls), zap.Duration("took", took))
	at := 0
	for _, p := range jobs {
		n := len(p.job.Documents)
		w.answer(p, r.model.Name(), fp, engine.Output{Vectors: out.Vectors[at : at+n], Rejected: out.Rejected[at : at+n]},
			tokenShare(out.Tokens, n, len(in.texts), len(jobs)))
		at += n
	}
}

// jobLog is the logger of one job: its request id and, when the request
// is traced, its trace id.
func (w *Worker) jobLog(p *pending) *zap.Logger {
	log := w.log.With(zap.String("request_id", p.job.RequestID))
	if p.trace.IsValid() {
		log = log.With(zap.String("trace_id", p.trace.TraceID().String()))
	}
	return log
}

func textBytes(texts []string) (n int) {
	for _, t := range texts {
		n += len(t)
	}
	return n
}

// giveBack returns a batch to the queue at once, for another server: one
// found on a stalled server, or refused by a busy one (429).
func (w *Worker) giveBack(jobs []*pending) {
	w.handBack(jobs)
	for range jobs {
		w.opts.Observer.JobError("handed_back")
	}
}

// dropCancelled acks, unanswered, the jobs of requests cancelled while
// they waited here: they cost no model time.
func (w *Worker) dropCancelled(items []*pending) []*pending {
	live := items[:0:0]
	for _, p := range items {
		if w.cancelled.has(p.job.RequestID) {
			_ = p.msg.Ack()
			w.opts.Observer.JobError("cancelled")
			continue
		}
		live = append(live, p)
	}
	return live
}

// inputs are a batch's texts as the model gets them, and what the batch
// is made of.
type inputs struct {
	texts    []string
	requests int       // distinct requests
	tokens   int       // estimated
	waits    []JobWait // each job's wait since its publish
	bulk     int       // documents from the bulk lane
}

// modelInputs turns the jobs' documents into the model's inputs, queries
// with their instruction.
func (w *Worker) modelInputs(jobs []*pending) inputs {
	in := inputs{waits: make([]JobWait, 0, len(jobs))}
	start := w.opts.Now()
	requests := map[string]bool{}
	for _, p := range jobs {
		requests[p.job.RequestID] = true
		if !p.published.IsZero() {
			in.waits = append(in.waits, JobWait{Lane: p.lane, Wait: start.Sub(p.published)})
		}
		if p.lane == wire.LaneBulk {
			in.bulk += len(p.job.Documents)
		}
		in.tokens += p.tokens
		for _, d := range p.job.Documents {
			if p.job.InputType == wire.InputQuery {
				d = prompt.Query(w.opts.QueryTask, d)
			}
			in.texts = append(in.texts, d)
		}
	}
	in.requests = len(requests)
	return in
}

// observe tells the observer about the batch.
func (w *Worker) observe(r *runner, jobs []*pending, in inputs, reason FlushReason, out engine.Output, took time.Duration, handedOver bool, err error) {
	rejected := 0
	for _, e := range out.Rejected {
		if e != nil {
			rejected++
		}
	}
	w.opts.Observer.Batch(BatchInfo{Endpoint: r.model.Host(), Jobs: len(jobs), Requests: in.requests,
		Documents: len(in.texts), BulkDocuments: in.bulk, Waits: in.waits, Reason: reason, Calls: out.Calls, Rejected: rejected, HandedOver: handedOver,
		Tokens: out.Tokens, Took: took, Err: err})
}

// tokenShare is a job's share of a call's prompt tokens: Ollama counts per
// call, not per input.
func tokenShare(tokens, docs, inputs, jobs int) int {
	if jobs == 1 || inputs == 0 {
		return tokens
	}
	return tokens * docs / inputs
}

// answer replies to one job with its vectors, or with the first of its
// documents the model refused, then acks it. A reply that cannot be sent
// leaves the job unacked: JetStream redelivers it after the ack wait.
func (w *Worker) answer(p *pending, model string, fp vector.Fingerprint, out engine.Output, tokens int) {
	rep := wire.Reply{Worker: w.opts.ID, Model: model, Fingerprint: fp, Vectors: out.Vectors, Tokens: tokens}
	for i, rej := range out.Rejected {
		if rej != nil {
			rep = wire.Reply{Worker: w.opts.ID, Model: model, Err: &wire.ReplyError{Code: wire.StatusRejected, Message: rej.Error(), Index: i}}
			w.jobLog(p).Info("document rejected by the model",
				zap.Int("document", p.job.Offset+i), zap.Error(rej))
			w.opts.Observer.JobError("rejected")
			break
		}
	}
	if err := w.reply(p.job.ReplyTo, rep); err != nil {
		w.opts.Observer.JobError("reply_failed")
		return
	}
	if err := p.msg.Ack(); err != nil {
		w.jobLog(p).Warn("ack failed; the job may run again", zap.Error(err))
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
	delay := retryDelay.Delay(int(delivered))
	last := delivered >= uint64(w.opts.Consumer.MaxDeliver)
	late := !p.job.Deadline.IsZero() && w.opts.Now().Add(delay).After(p.job.Deadline)
	log := w.jobLog(p).With(zap.Uint64("delivered", delivered))
	switch {
	case stopping:
		_ = p.msg.Nak()
	case last || late:
		msg := fmt.Sprintf("embedding failed after %d attempts: %v", delivered, cause)
		if !last {
			msg = fmt.Sprintf("embedding failed and the request's deadline leaves no time to retry: %v", cause)
		}
		_ = w.reply(p.job.ReplyTo, wire.Reply{Worker: w.opts.ID, Err: &wire.ReplyError{Code: wire.StatusUnavailable, Message: msg, Index: -1}})
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
// with its reason and payload.
func (w *Worker) deadLetter(m jetstream.Msg, reason string) {
	_ = w.dead.Msg(context.Background(), deadletter.KindJobs, m, reason, nil)
}

// retryDelay paces the attempts of a job the model failed: 0.5 s,
// doubling, at most 10 s.
var retryDelay = backoff.Policy{First: 500 * time.Millisecond, Max: 10 * time.Second}

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

func (w *Worker) reply(subject string, r wire.Reply) error {
	if err := w.nc.PublishMsg(r.Msg(subject)); err != nil {
		w.log.Warn("reply not sent", zap.String("subject", subject), zap.Error(err))
		return err
	}
	return nil
}
