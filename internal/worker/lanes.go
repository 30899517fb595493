// The lane rules: what goes into a batch from the interactive and the bulk
// lane. Plain logic over a source of jobs, like the Batcher: no goroutines,
// no I/O of its own, a clock passed in.

package worker

import (
	"slices"
	"time"

	"github.com/waywo/embed/internal/wire"
)

// busyWindow is how long after the last interactive job the worker counts
// interactive traffic present, and keeps bulk batches short.
const busyWindow = time.Second

// bulkEvery is the most batches in a row that go without bulk while bulk
// work may wait: light interactive batches skip it, every bulkEvery-th
// takes one bulk job regardless.
const bulkEvery = 4

// source is where the lanes' jobs come from: each lane's consumer.
type source interface {
	// fetchNow returns the jobs of up to n messages lane has now, without
	// waiting; got counts the messages, the jobs among them dropped at
	// once (expired, cancelled, malformed) included, so that got < n says
	// the lane had no more. err is a failure to fetch, not an empty lane.
	fetchNow(lane wire.Lane, n int) (jobs []*pending, got int, err error)
}

// lanes are the rules by which a batch is filled, and the jobs fetched
// from each lane that did not fit a batch: they go first into the next.
//
// Priority: a batch takes the interactive jobs waiting first, then tops up
// with bulk (see fill). While interactive traffic is present (a job in the
// last busyWindow), bulk adds at most one job (wire.BulkJobDocuments
// documents) per batch, so a query arriving behind a batch waits for a
// short one. Bulk never starves: the interactive jobs taken first leave
// room for one bulk job in every batch, and no more than bulkEvery-1
// batches in a row go without bulk while it may wait.
type lanes struct {
	src       source
	batchSize int
	now       func() time.Time

	held map[wire.Lane][]*pending
	// lastInteractive is when an interactive job was last taken.
	lastInteractive time.Time
	// sinceBulk counts the batches sent without bulk since bulk was last
	// sent or found empty.
	sinceBulk int
}

func newLanes(src source, batchSize int, now func() time.Time) *lanes {
	return &lanes{src: src, batchSize: batchSize, now: now, held: map[wire.Lane][]*pending{}}
}

func (l *lanes) heldCount() int {
	return len(l.held[wire.LaneInteractive]) + len(l.held[wire.LaneBulk])
}

// all are the jobs the lanes hold, interactive first.
func (l *lanes) all() []*pending {
	return append(append([]*pending(nil), l.held[wire.LaneInteractive]...), l.held[wire.LaneBulk]...)
}

// release empties the lanes of the jobs they hold, interactive first, for
// the caller to hand back.
func (l *lanes) release() []*pending {
	out := l.all()
	clear(l.held)
	return out
}

// holdAll returns a batch's items to the front of their lanes, so that the
// batch can be formed again (a query that arrived meanwhile goes first).
func (l *lanes) holdAll(items []*pending) {
	for _, p := range slices.Backward(items) {
		l.held[p.lane] = append([]*pending{p}, l.held[p.lane]...)
	}
}

// hold keeps a fetched job that did not fit the batch for the next.
func (l *lanes) hold(p *pending) { l.held[p.lane] = append(l.held[p.lane], p) }

// fill adds to the batch what the lanes hold and have right now, without
// waiting: interactive first (leaving room for one bulk job), then bulk
// (one job only while interactive traffic is present), then interactive
// again into any room left. A batch with fewer interactive documents than
// its share goes without bulk: topping it up would make its queries wait
// for a bulk job's documents to save one call's overhead. drained says
// the interactive lane is known to be empty already. err is a failure to
// fetch, not an empty lane.
func (l *lanes) fill(b *Batcher[*pending], drained bool) error {
	reserve := min(wire.BulkJobDocuments, max(0, l.batchSize-1))
	if !drained {
		empty, err := l.take(b, wire.LaneInteractive, b.Room()-reserve)
		if err != nil {
			return err
		}
		drained = empty
	}
	interactive := 0
	for _, p := range b.Items() {
		if p.lane == wire.LaneInteractive {
			interactive += len(p.job.Documents)
		}
	}
	if interactive > 0 && interactive < l.batchSize-reserve && drained && l.sinceBulk < bulkEvery-1 {
		return nil // a light interactive batch: the queries go alone
	}
	bulkRoom := b.Room()
	if l.now().Sub(l.lastInteractive) < busyWindow {
		bulkRoom = min(bulkRoom, wire.BulkJobDocuments)
	}
	empty, err := l.take(b, wire.LaneBulk, bulkRoom)
	if err != nil {
		return err
	}
	if empty && len(l.held[wire.LaneBulk]) == 0 {
		l.sinceBulk = 0 // nothing waits
	}
	if drained && len(l.held[wire.LaneInteractive]) == 0 {
		return nil
	}
	_, err = l.take(b, wire.LaneInteractive, b.Room())
	return err
}

// take moves up to docs documents of lane into the batch: its held jobs
// first, then what its source has now (an empty batch takes one job
// whatever its size). A fetched job that does not fit is held for the
// next batch. empty says the lane had nothing more.
func (l *lanes) take(b *Batcher[*pending], lane wire.Lane, docs int) (empty bool, err error) {
	taken := 0
	fits := func(p *pending) bool {
		n := len(p.job.Documents)
		return b.Len() == 0 || (taken+n <= docs && b.Fits(n, p.tokens))
	}
	add := func(p *pending) {
		b.Add(p, len(p.job.Documents), p.tokens)
		taken += len(p.job.Documents)
		l.took(p)
	}
	held := l.held[lane]
	for len(held) > 0 && fits(held[0]) {
		add(held[0])
		held = held[1:]
	}
	l.held[lane] = held
	for len(l.held[lane]) == 0 && taken < docs && !b.Full() {
		want := min(docs-taken, 16)
		if lane == wire.LaneBulk {
			want = max(1, (docs-taken)/wire.BulkJobDocuments)
		}
		jobs, got, err := l.src.fetchNow(lane, want)
		if err != nil {
			return false, err
		}
		for _, p := range jobs {
			if len(l.held[lane]) == 0 && fits(p) {
				add(p)
			} else {
				l.hold(p)
			}
		}
		if got < want {
			return true, nil
		}
	}
	return false, nil
}

// took notes that p goes into the batch.
func (l *lanes) took(p *pending) {
	if p.lane == wire.LaneInteractive {
		l.lastInteractive = l.now()
	}
}

// sent notes that a batch of items went to the model.
func (l *lanes) sent(items []*pending) {
	l.sinceBulk++
	for _, p := range items {
		if p.lane == wire.LaneBulk {
			l.sinceBulk = 0
			return
		}
	}
}
