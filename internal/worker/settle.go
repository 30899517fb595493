// Settling jobs: the model call, replies, retries, dead letters, acks.

package worker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/prompt"
	"github.com/waywo/embed/internal/queue"
)

// process embeds one batch on r and answers every job in it.
func (w *Worker) process(ctx, workCtx context.Context, r *runner, b batch) {
	w.setBusy(r, +1)
	defer w.setBusy(r, -1)

	// Requests cancelled while their jobs waited here cost no model time.
	batch := b.items[:0:0]
	for _, p := range b.items {
		if w.cancelled.has(p.job.RequestID) {
			_ = p.msg.Ack()
			w.opts.Observer.JobError("cancelled")
			continue
		}
		batch = append(batch, p)
	}
	if len(batch) == 0 {
		return
	}
	var inputs []string
	requests := map[string]bool{}
	start := w.opts.Now()
	waits := make([]JobWait, 0, len(batch))
	bulk := 0
	for _, p := range batch {
		requests[p.job.RequestID] = true
		if !p.published.IsZero() {
			waits = append(waits, JobWait{Lane: p.lane, Wait: start.Sub(p.published)})
		}
		if p.lane == queue.LaneBulk {
			bulk += len(p.job.Documents)
		}
		for _, d := range p.job.Documents {
			if p.job.InputType == queue.InputQuery {
				d = prompt.Query(w.opts.QueryTask, d)
			}
			inputs = append(inputs, d)
		}
	}
	stop := w.keepInProgress(batch)
	// Read before the call: should the probe see a new model during it, the
	// vectors are recorded under the old digest and so re-embedded later,
	// never the other way round.
	fp := r.model.Fingerprint()
	out, err := r.model.EmbedAll(workCtx, inputs)
	stop()
	took := w.opts.Now().Sub(start)
	rejected := 0
	for _, e := range out.Rejected {
		if e != nil {
			rejected++
		}
	}
	w.opts.Observer.Batch(BatchInfo{Endpoint: r.model.Host(), Jobs: len(batch), Requests: len(requests),
		Documents: len(inputs), BulkDocuments: bulk, Waits: waits, Reason: b.reason, Calls: out.Calls, Rejected: rejected,
		Tokens: out.Tokens, Took: took, Err: err})

	if err != nil {
		w.log.Warn("model call failed", zap.String("ollama", r.model.Host()), zap.Int("jobs", len(batch)),
			zap.Int("documents", len(inputs)), zap.Duration("took", took), zap.Error(err))
		w.setReady(r, false, err.Error())
		stopping := ctx.Err() != nil
		for _, p := range batch {
			w.retry(p, err, stopping)
		}
		return
	}
	w.log.Debug("batch embedded", zap.String("ollama", r.model.Host()), zap.Int("jobs", len(batch)),
		zap.Int("requests", len(requests)), zap.Int("documents", len(inputs)), zap.Int("bulk_documents", bulk), zap.String("reason", string(b.reason)),
		zap.Int("calls", out.Calls), zap.Duration("took", took))

	at := 0
	for _, p := range batch {
		n := len(p.job.Documents)
		rep := queue.Reply{Worker: w.opts.ID, Model: r.model.Name(), Fingerprint: fp, Vectors: out.Vectors[at : at+n]}
		for i, rej := range out.Rejected[at : at+n] {
			if rej != nil {
				rep = queue.Reply{Worker: w.opts.ID, Model: r.model.Name(), Err: &queue.ReplyError{Code: queue.StatusRejected, Message: rej.Error(), Index: i}}
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
		_ = w.reply(p.job.ReplyTo, queue.Reply{Worker: w.opts.ID, Err: &queue.ReplyError{Code: queue.StatusUnavailable, Message: msg, Index: -1}})
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
	err := queue.PublishDeadLetter(ctx, w.js, queue.DeadLetter{
		Kind: queue.KindJobs, Subject: m.Subject(), Reason: reason, Deliveries: delivered, Header: m.Headers(), Payload: m.Data(),
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

func (w *Worker) reply(subject string, r queue.Reply) error {
	if err := w.nc.PublishMsg(r.Msg(subject)); err != nil {
		w.log.Warn("reply not sent", zap.String("subject", subject), zap.Error(err))
		return err
	}
	return nil
}
