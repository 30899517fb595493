// Intake: fetching jobs, filling a batch, handing back what is not started.

package worker

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/queue"
)

// dispatch is the loop that owns the batcher: it fetches the next batch while
// the endpoints compute, then hands it to the first idle one.
func (w *Worker) dispatch(ctx context.Context, cons jetstream.Consumer) {
	b := NewBatcher[*pending](w.opts.BatchSize, w.opts.BatchWait, w.opts.Now)
	outage := &queue.Outage{What: "fetching jobs", Log: w.log, Counted: func() { w.opts.Observer.JobError("fetch_failed") }}
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
			p, behind, err := w.fetchOne(cons)
			if err != nil {
				outage.Failed(ctx, err)
				continue
			}
			outage.OK()
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
		reason, linger := b.Decide(len(held) > 0, false)
		if linger > 0 {
			held = w.fillWait(cons, b, held, linger)
			reason, _ = b.Decide(len(held) > 0, true)
		}
		r.work <- batch{items: b.Flush(), reason: reason}
	}
}

// fetchOne blocks up to a second for one job. behind is how many jobs the
// stream held for the consumer after it, as its delivery says (1 when it
// does not say). err is a failure to fetch (the stream unavailable), not
// an empty queue.
func (w *Worker) fetchOne(cons jetstream.Consumer) (got *pending, behind uint64, err error) {
	mb, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		return nil, 0, err
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
	if err := mb.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && got == nil {
		return nil, 0, err
	}
	return got, behind, nil
}

// fill adds what the queue has right now, without waiting, until the batch
// is full. What does not fit is returned to be first in the next batch;
// drained says the queue had nothing more.
func (w *Worker) fill(cons jetstream.Consumer, b *Batcher[*pending], held []*pending) (_ []*pending, drained bool) {
	for len(held) == 0 && !b.Full() {
		want := min(b.Room(), 16)
		mb, err := cons.FetchNoWait(want)
		if err != nil {
			return held, true // the next blocking fetch reports it
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
func (w *Worker) fillWait(cons jetstream.Consumer, b *Batcher[*pending], held []*pending, wait time.Duration) []*pending {
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
	job, err := queue.DecodeJob(m.Headers(), m.Data())
	if err != nil {
		w.log.Error("terminating malformed job", zap.String("request_id", job.RequestID), zap.Int("bytes", len(m.Data())), zap.Error(err))
		if queue.ValidSubject(job.ReplyTo) {
			w.reply(job.ReplyTo, queue.Reply{Err: &queue.ReplyError{Code: queue.StatusBadJob, Message: err.Error(), Index: -1}})
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
	if w.cancelled.has(job.RequestID) {
		w.log.Debug("dropping a job of a cancelled request", zap.String("request_id", job.RequestID))
		_ = m.Ack()
		w.opts.Observer.JobError("cancelled")
		return nil
	}
	return &pending{msg: m, job: job}
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
