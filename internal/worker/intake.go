// Intake: the loop that fills batches from both lanes' consumers by the
// lane rules (lanes.go), the blocking waits for work, decoding what is
// fetched, handing back what is not started.

package worker

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/tracing"
	"github.com/waywo/embed/internal/wire"
)

// idleWait is how long an idle worker blocks for an interactive job before
// it looks at the bulk lane again: what a bulk job waits at most on an
// idle worker.
const idleWait = 250 * time.Millisecond

// consumers are the lanes' JetStream consumers, the lanes' source.
type consumers struct {
	w    *Worker
	cons map[wire.Lane]jetstream.Consumer
	// pulls are the interactive lane's open pulls.
	pulls *pulls
}

func (c consumers) fetchNow(lane wire.Lane, n int) ([]*pending, int, error) {
	var jobs []*pending
	got := 0
	if lane == wire.LaneInteractive {
		for _, m := range c.pulls.take(n) {
			got++
			if p := c.w.accept(m, lane); p != nil {
				jobs = append(jobs, p)
			}
		}
		if got == n || c.pulls.covers() {
			return jobs, got, nil // what the lane has came through the open pulls
		}
	}
	// A failure with jobs in hand is not returned: the caller would drop
	// them, and the next fetch finds it again. A fetch that ends short
	// while its last delivery says more are pending (a brief pull that
	// expired before they all arrived, on a loaded machine) is followed by
	// another, so that got < n does say the lane had no more.
	for got < n {
		mb, err := c.fetchNoWait(lane, n-got)
		if err != nil {
			return jobs, got, errUnlessAny(err, got)
		}
		fetched, pending := 0, uint64(0)
		for m := range mb.Messages() {
			fetched++
			pending = 0
			if md, err := m.Metadata(); err == nil {
				pending = md.NumPending
			}
			if p := c.w.accept(m, lane); p != nil {
				jobs = append(jobs, p)
			}
		}
		if err := mb.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && fetched == 0 {
			return jobs, got, errUnlessAny(err, got)
		}
		got += fetched
		if fetched == 0 || pending == 0 {
			break
		}
	}
	return jobs, got, nil
}

func errUnlessAny(err error, got int) error {
	if got > 0 {
		return nil
	}
	return err
}

// briefWait stands in for no_wait on a prioritized consumer, where every
// pull must name its group and nats.go's FetchNoWait takes no options: a
// pull that ends after this long, at once if it gets its batch.
const briefWait = time.Millisecond

// fetchNoWait pulls up to n messages lane has now.
func (c consumers) fetchNoWait(lane wire.Lane, n int) (jetstream.MessageBatch, error) {
	if lane == wire.LaneInteractive && c.pulls.prioritized {
		return c.cons[lane].Fetch(n, c.pulls.options(briefWait, c.priority())...)
	}
	return c.cons[lane].FetchNoWait(n)
}

// priority is the priority of the worker's next pull on the interactive
// lane: a free worker's while an endpoint has room for a call, a busy
// one's otherwise (a busy worker fetches its next batch while its
// endpoints compute).
func (c consumers) priority() int {
	if c.w.anyFree() {
		return wire.PullIdle
	}
	return wire.PullBusy
}

// dispatch is the loop that owns the batcher and the lanes: it fetches the
// next batch while the endpoints compute, then hands it to the first idle
// one.
func (w *Worker) dispatch(ctx context.Context, cons map[wire.Lane]jetstream.Consumer) {
	src := consumers{w: w, cons: cons, pulls: &pulls{cons: cons[wire.LaneInteractive], now: w.opts.Now, prioritized: w.opts.Consumer.Prioritized}}
	b := NewBatcher[*pending](w.opts.BatchSize, w.opts.BatchTokens, w.opts.BatchWait, w.opts.Now)
	l := newLanes(src, w.opts.BatchSize, w.opts.Now)
	handBackAll := func() {
		ps := append(b.Flush(), l.release()...)
		for _, m := range src.pulls.stop() {
			ps = append(ps, &pending{msg: m, lane: wire.LaneInteractive})
		}
		w.handBack(ps)
	}
	defer handBackAll()
	outage := &broker.Outage{What: "fetching jobs", Log: w.log, Counted: func() { w.opts.Observer.JobError("fetch_failed") }}

	for ctx.Err() == nil {
		if ch, ok := w.anyReady(); !ok {
			// Take no work that no endpoint can do; let other workers have it.
			handBackAll()
			select {
			case <-ch:
			case <-ctx.Done():
			}
			continue
		}
		err := l.fill(b, false)
		if err == nil && b.Len() == 0 {
			// Nothing anywhere: block for an interactive job a while. A lone
			// request then goes without another look at its own lane (and
			// alone, three times in four; see lanes.fill).
			p, behind, ferr := src.waitInteractive(ctx)
			if err = ferr; err == nil && p != nil {
				b.Add(p, len(p.job.Documents), p.tokens)
				l.took(p)
				err = l.fill(b, behind == 0)
			}
		}
		if err != nil {
			outage.Failed(ctx, err)
			continue
		}
		outage.OK()
		if b.Len() == 0 {
			continue
		}

		r, waited := w.awaitIdle(ctx, b, l, src.pulls)
		if r == nil {
			continue // stopping, or no endpoint ready: the loop top hands back
		}
		if waited {
			// Jobs may have arrived while the endpoints were busy: the batch
			// is formed again, so that a query that came meanwhile goes
			// first even into a batch bulk had filled.
			l.holdAll(b.Flush())
			_ = l.fill(b, false)
		}
		reason, linger := b.Decide(l.heldCount() > 0, false)
		if linger > 0 {
			src.linger(b, l, linger)
			reason, _ = b.Decide(l.heldCount() > 0, true)
		}
		items := b.Flush()
		l.sent(items)
		r.work <- batch{items: items, reason: reason}
	}
}

// waitInteractive blocks a while for one interactive job: through the
// free worker's pull while an endpoint has room for a call, through the
// standing pull while none has, and from either while both are open. It
// returns nil when the pull it waits on ends empty (idleWait, or
// standingWait), so that the caller looks at the bulk lane again. behind
// is how many jobs the lane held after the one returned, as its delivery
// says (1 when unknown). err is a failure to fetch (the stream
// unavailable), not an empty lane.
func (c consumers) waitInteractive(ctx context.Context) (got *pending, behind uint64, err error) {
	for {
		freed := c.w.freedSignal()
		readiness, ready := c.w.anyReady()
		if !ready {
			return nil, 0, nil // the caller's loop hands back what it holds
		}
		if c.w.anyFree() || !c.pulls.prioritized {
			err = c.pulls.openFree(idleWait)
		} else {
			err = c.pulls.openBusy(standingMax)
		}
		if err != nil {
			return nil, 0, err
		}
		select {
		case m, ok := <-c.pulls.free.arrivals():
			mb := c.pulls.free.mb
			c.pulls.free.received(ok)
			if !ok {
				if err := mb.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
					return nil, 0, err
				}
				return nil, 0, nil
			}
			behind = 1
			if md, err := m.Metadata(); err == nil {
				behind = md.NumPending
			}
			return c.w.accept(m, wire.LaneInteractive), behind, nil
		case m, ok := <-c.pulls.busy.arrivals():
			return c.pulls.busy.job(c.w, m, ok), 1, nil
		case <-freed: // an endpoint freed: pull as a free worker
		case <-readiness: // an endpoint became ready (or not): likewise
		case <-ctx.Done():
			return nil, 0, nil
		}
	}
}

// linger waits up to wait for more interactive jobs (EMBED_BATCH_WAIT).
func (c consumers) linger(b *Batcher[*pending], l *lanes, wait time.Duration) {
	mb, err := c.cons[wire.LaneInteractive].Fetch(min(b.Room(), 16), c.pulls.options(wait, c.priority())...)
	if err != nil {
		return
	}
	for m := range mb.Messages() {
		p := c.w.accept(m, wire.LaneInteractive)
		if p == nil {
			continue
		}
		if len(l.held[wire.LaneInteractive]) == 0 && b.Add(p, len(p.job.Documents), p.tokens) {
			l.took(p)
			continue
		}
		l.hold(p)
	}
}

// accept decodes a fetched message. Malformed jobs are terminated (and their
// requester told, when the reply subject is readable); jobs whose requester
// has given up are acked unanswered.
func (w *Worker) accept(m jetstream.Msg, lane wire.Lane) *pending {
	job, err := wire.DecodeJob(m.Headers(), m.Data())
	if err != nil {
		w.log.Error("terminating malformed job", zap.String("request_id", job.RequestID), zap.String("lane", string(lane)),
			zap.Int("bytes", len(m.Data())), zap.Error(err))
		if wire.IsReplySubject(job.ReplyTo) {
			w.reply(job.ReplyTo, wire.Reply{Err: &wire.ReplyError{Code: wire.StatusBadJob, Message: err.Error(), Index: -1}})
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
	p := &pending{msg: m, job: job, lane: lane, tokens: w.tokens.estimate(job, w.opts.QueryTask),
		trace: trace.SpanContextFromContext(tracing.Extract(context.Background(), m.Headers()))}
	if md, err := m.Metadata(); err == nil {
		p.published = md.Timestamp
	}
	return p
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
