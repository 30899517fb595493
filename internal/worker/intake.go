// Intake: fetching jobs from both lanes, filling a batch interactive first,
// handing back what is not started.

package worker

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/queue"
)

// idleWait is how long an idle worker blocks for an interactive job before
// it looks at the bulk lane again: what a bulk job waits at most on an
// idle worker.
const idleWait = 250 * time.Millisecond

// busyWindow is how long after the last interactive job the worker counts
// interactive traffic present, and keeps bulk batches short.
const busyWindow = time.Second

// lanes are the consumers of both lanes and the jobs fetched from each
// that did not fit the batch: they go first into the next.
type lanes struct {
	cons map[queue.Lane]jetstream.Consumer
	held map[queue.Lane][]*pending
	// lastInteractive is when an interactive job was last taken.
	lastInteractive time.Time
	// sinceBulk counts the batches sent without bulk since bulk was last
	// sent or found empty.
	sinceBulk int
}

// bulkEvery is the most batches in a row that go without bulk while bulk
// work may wait: light interactive batches skip it, every bulkEvery-th
// takes one bulk job regardless.
const bulkEvery = 4

func (l *lanes) heldCount() int {
	return len(l.held[queue.LaneInteractive]) + len(l.held[queue.LaneBulk])
}

func (l *lanes) allHeld() []*pending {
	return append(append([]*pending(nil), l.held[queue.LaneInteractive]...), l.held[queue.LaneBulk]...)
}

// dispatch is the loop that owns the batcher: it fetches the next batch while
// the endpoints compute, then hands it to the first idle one.
//
// Priority: a batch takes the interactive jobs waiting first, then tops up
// with bulk (see fill). While interactive traffic is present (a job in the
// last busyWindow), bulk adds at most one job (queue.BulkJobDocuments
// documents) per batch, so a query arriving behind a batch waits for a
// short one. Bulk never starves: the interactive jobs taken first leave
// room for one bulk job in every batch, and no more than bulkEvery-1
// batches in a row go without bulk while it may wait.
func (w *Worker) dispatch(ctx context.Context, cons map[queue.Lane]jetstream.Consumer) {
	b := NewBatcher[*pending](w.opts.BatchSize, w.opts.BatchWait, w.opts.Now)
	l := &lanes{cons: cons, held: map[queue.Lane][]*pending{}}
	defer func() { w.handBack(append(b.Flush(), l.allHeld()...)) }()
	outage := &queue.Outage{What: "fetching jobs", Log: w.log, Counted: func() { w.opts.Observer.JobError("fetch_failed") }}

	for ctx.Err() == nil {
		if ch, ok := w.anyReady(); !ok {
			// Take no work that no endpoint can do; let other workers have it.
			w.handBack(append(b.Flush(), l.allHeld()...))
			clear(l.held)
			select {
			case <-ch:
			case <-ctx.Done():
			}
			continue
		}
		err := w.fill(b, l, false)
		if err == nil && b.Len() == 0 {
			// Nothing anywhere: block for an interactive job a while. A lone
			// request then goes without another look at its own lane (and
			// alone, three times in four; see fill).
			p, behind, ferr := w.fetchOne(l)
			if err = ferr; err == nil && p != nil {
				b.Add(p, len(p.job.Documents))
				w.took(l, p)
				err = w.fill(b, l, behind == 0)
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

		r, waited := w.awaitIdle(ctx, b, l.allHeld())
		if r == nil {
			continue // stopping, or no endpoint ready: the loop top hands back
		}
		if waited {
			// Jobs may have arrived while the endpoints were busy: the batch
			// is formed again, so that a query that came meanwhile goes
			// first even into a batch bulk had filled.
			for _, p := range slices.Backward(b.Flush()) {
				l.held[p.lane] = append([]*pending{p}, l.held[p.lane]...)
			}
			_ = w.fill(b, l, false)
		}
		reason, linger := b.Decide(l.heldCount() > 0, false)
		if linger > 0 {
			w.fillWait(b, l, linger)
			reason, _ = b.Decide(l.heldCount() > 0, true)
		}
		items := b.Flush()
		l.sinceBulk++
		for _, p := range items {
			if p.lane == queue.LaneBulk {
				l.sinceBulk = 0
				break
			}
		}
		r.work <- batch{items: items, reason: reason}
	}
}

// fill adds to the batch what the lanes hold and have right now, without
// waiting: interactive first (leaving room for one bulk job), then bulk
// (one job only while interactive traffic is present), then interactive
// again into any room left. A batch with fewer interactive documents than
// its share goes without bulk: topping it up would make its queries wait
// for a bulk job's documents to save one call's overhead. drained says
// the interactive lane is known to be empty already. err is a failure to
// fetch, not an empty lane.
func (w *Worker) fill(b *Batcher[*pending], l *lanes, drained bool) error {
	reserve := min(queue.BulkJobDocuments, max(0, w.opts.BatchSize-1))
	if !drained {
		empty, err := w.take(b, l, queue.LaneInteractive, b.Room()-reserve)
		if err != nil {
			return err
		}
		drained = empty
	}
	interactive := 0
	for _, p := range b.Items() {
		if p.lane == queue.LaneInteractive {
			interactive += len(p.job.Documents)
		}
	}
	if interactive > 0 && interactive < w.opts.BatchSize-reserve && drained && l.sinceBulk < bulkEvery-1 {
		return nil // a light interactive batch: the queries go alone
	}
	bulkRoom := b.Room()
	if w.opts.Now().Sub(l.lastInteractive) < busyWindow {
		bulkRoom = min(bulkRoom, queue.BulkJobDocuments)
	}
	empty, err := w.take(b, l, queue.LaneBulk, bulkRoom)
	if err != nil {
		return err
	}
	if empty && len(l.held[queue.LaneBulk]) == 0 {
		l.sinceBulk = 0 // nothing waits
	}
	if drained && len(l.held[queue.LaneInteractive]) == 0 {
		return nil
	}
	_, err = w.take(b, l, queue.LaneInteractive, b.Room())
	return err
}

// take moves up to docs documents of lane into the batch: its held jobs
// first, then what its consumer has now (an empty batch takes one job
// whatever its size). A fetched job that does not fit is held for the
// next batch. empty says the lane had nothing more.
func (w *Worker) take(b *Batcher[*pending], l *lanes, lane queue.Lane, docs int) (empty bool, err error) {
	taken := 0
	fits := func(p *pending) bool {
		n := len(p.job.Documents)
		return b.Len() == 0 || (taken+n <= docs && n <= b.Room())
	}
	held := l.held[lane]
	for len(held) > 0 && fits(held[0]) {
		b.Add(held[0], len(held[0].job.Documents))
		taken += len(held[0].job.Documents)
		w.took(l, held[0])
		held = held[1:]
	}
	l.held[lane] = held
	for len(held) == 0 && taken < docs && !b.Full() {
		want := min(docs-taken, 16)
		if lane == queue.LaneBulk {
			want = max(1, (docs-taken)/queue.BulkJobDocuments)
		}
		mb, err := l.cons[lane].FetchNoWait(want)
		if err != nil {
			return false, err
		}
		n := 0
		for m := range mb.Messages() {
			n++
			p := w.accept(m, lane)
			switch {
			case p == nil:
			case len(held) == 0 && fits(p):
				b.Add(p, len(p.job.Documents))
				taken += len(p.job.Documents)
				w.took(l, p)
			default:
				held = append(held, p)
			}
		}
		l.held[lane] = held
		if err := mb.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && n == 0 {
			return false, err
		}
		if n < want {
			return true, nil
		}
	}
	return false, nil
}

// took notes that p goes into the batch.
func (w *Worker) took(l *lanes, p *pending) {
	if p.lane == queue.LaneInteractive {
		l.lastInteractive = w.opts.Now()
	}
}

// fetchOne blocks up to idleWait for one interactive job. behind is how
// many jobs the lane held after it, as its delivery says. err is a failure
// to fetch (the stream unavailable), not an empty queue.
func (w *Worker) fetchOne(l *lanes) (got *pending, behind uint64, err error) {
	mb, err := l.cons[queue.LaneInteractive].Fetch(1, jetstream.FetchMaxWait(idleWait))
	if err != nil {
		return nil, 0, err
	}
	behind = 1
	for m := range mb.Messages() {
		if p := w.accept(m, queue.LaneInteractive); p != nil {
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

// fillWait lingers up to wait for more interactive jobs when
// EMBED_BATCH_WAIT is set.
func (w *Worker) fillWait(b *Batcher[*pending], l *lanes, wait time.Duration) {
	if l.heldCount() > 0 {
		return
	}
	mb, err := l.cons[queue.LaneInteractive].Fetch(min(b.Room(), 16), jetstream.FetchMaxWait(wait))
	if err != nil {
		return
	}
	for m := range mb.Messages() {
		p := w.accept(m, queue.LaneInteractive)
		if p == nil {
			continue
		}
		if len(l.held[queue.LaneInteractive]) == 0 && b.Add(p, len(p.job.Documents)) {
			w.took(l, p)
			continue
		}
		l.held[queue.LaneInteractive] = append(l.held[queue.LaneInteractive], p)
	}
}

// accept decodes a fetched message. Malformed jobs are terminated (and their
// requester told, when the reply subject is readable); jobs whose requester
// has given up are acked unanswered.
func (w *Worker) accept(m jetstream.Msg, lane queue.Lane) *pending {
	job, err := queue.DecodeJob(m.Headers(), m.Data())
	if err != nil {
		w.log.Error("terminating malformed job", zap.String("request_id", job.RequestID), zap.String("lane", string(lane)),
			zap.Int("bytes", len(m.Data())), zap.Error(err))
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
	p := &pending{msg: m, job: job, lane: lane}
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
