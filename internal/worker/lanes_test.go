package worker

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/wire"
)

// queued is a source with jobs waiting in each lane, as a consumer would
// deliver them: in order, as many as asked for.
type queued struct {
	jobs    map[wire.Lane][]*pending
	fetches map[wire.Lane]int
	err     error
}

func (q *queued) fetchNow(lane wire.Lane, n int) ([]*pending, int, error) {
	if q.err != nil {
		return nil, 0, q.err
	}
	q.fetches[lane]++
	got := q.jobs[lane][:min(n, len(q.jobs[lane]))]
	q.jobs[lane] = q.jobs[lane][len(got):]
	return got, len(got), nil
}

// jobsOf makes n jobs of docs documents each in lane, named lane/i.
func jobsOf(lane wire.Lane, n, docs int) []*pending {
	out := make([]*pending, n)
	for i := range out {
		d := make([]string, docs)
		for j := range d {
			d[j] = "d"
		}
		out[i] = &pending{lane: lane, job: wire.Job{RequestID: fmt.Sprintf("%s/%d", lane, i), Documents: d}}
	}
	return out
}

// batchOf describes a batch by lane: documents of each.
func batchOf(items []*pending) map[wire.Lane]int {
	out := map[wire.Lane]int{}
	for _, p := range items {
		out[p.lane] += len(p.job.Documents)
	}
	return out
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTestLanes(interactive, bulk []*pending) (*lanes, *queued, *clock) {
	src := &queued{jobs: map[wire.Lane][]*pending{wire.LaneInteractive: interactive, wire.LaneBulk: bulk}, fetches: map[wire.Lane]int{}}
	c := &clock{t: time.Unix(1_000_000, 0)}
	return newLanes(src, 32, c.now), src, c
}

// formBatch fills a batch of 32 the way the dispatch loop does and sends it.
func formBatch(t *testing.T, l *lanes, c *clock) map[wire.Lane]int {
	t.Helper()
	b := NewBatcher[*pending](32, 0, 0, c.now)
	require.NoError(t, l.fill(b, false))
	items := b.Flush()
	l.sent(items)
	return batchOf(items)
}

func TestLaneRules(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name              string
		interactive, bulk []*pending
		quietFor          time.Duration // since the last interactive job; 0: one was just taken
		want              []map[wire.Lane]int
	}{
		{
			name:        "interactive first, with room for one bulk job",
			interactive: jobsOf(wire.LaneInteractive, 40, 1), bulk: jobsOf(wire.LaneBulk, 10, 8),
			want: []map[wire.Lane]int{
				{wire.LaneInteractive: 24, wire.LaneBulk: 8},
				{wire.LaneInteractive: 16}, // the rest of the queries: a light batch, alone
			},
		},
		{
			name:        "light interactive batches go alone three times in four",
			interactive: jobsOf(wire.LaneInteractive, 1, 2), bulk: jobsOf(wire.LaneBulk, 10, 8),
			want: []map[wire.Lane]int{
				{wire.LaneInteractive: 2},
				{wire.LaneBulk: 8}, // nothing interactive waits: bulk, one job while traffic is present
			},
		},
		{
			name:     "without interactive traffic bulk fills the batch",
			bulk:     jobsOf(wire.LaneBulk, 10, 8),
			quietFor: 2 * busyWindow,
			want:     []map[wire.Lane]int{{wire.LaneBulk: 32}, {wire.LaneBulk: 32}, {wire.LaneBulk: 16}},
		},
		{
			name:     "within the busy window bulk goes one job at a time",
			bulk:     jobsOf(wire.LaneBulk, 3, 8),
			quietFor: busyWindow / 2,
			want:     []map[wire.Lane]int{{wire.LaneBulk: 8}, {wire.LaneBulk: 8}, {wire.LaneBulk: 8}, {}},
		},
		{
			name:        "a job larger than the batch goes alone into an empty one",
			interactive: jobsOf(wire.LaneInteractive, 2, 40),
			want:        []map[wire.Lane]int{{wire.LaneInteractive: 40}, {wire.LaneInteractive: 40}, {}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, _, c := newTestLanes(tc.interactive, tc.bulk)
			l.lastInteractive = c.t.Add(-tc.quietFor)
			if tc.quietFor == 0 {
				l.lastInteractive = c.t
			}
			var got []map[wire.Lane]int
			for range tc.want {
				got = append(got, formBatch(t, l, c))
			}
			require.Equal(t, tc.want, got)
		})
	}
}

// A steady trickle of light interactive batches lets bulk in every
// bulkEvery-th batch, never more rarely: bulk does not starve.
func TestLightInteractiveBatchesLeaveBulkEveryFourth(t *testing.T) {
	t.Parallel()
	l, src, c := newTestLanes(nil, jobsOf(wire.LaneBulk, 100, 8))
	var withBulk []int
	for i := range 12 {
		src.jobs[wire.LaneInteractive] = jobsOf(wire.LaneInteractive, 1, 1) // one query waits each time
		if formBatch(t, l, c)[wire.LaneBulk] > 0 {
			withBulk = append(withBulk, i)
		}
	}
	require.Equal(t, []int{3, 7, 11}, withBulk)
}

// A job that did not fit is held, and goes first into the next batch,
// ahead of what its lane has now.
func TestHeldJobsGoFirst(t *testing.T) {
	t.Parallel()
	l, src, c := newTestLanes(jobsOf(wire.LaneInteractive, 2, 20), nil)
	l.lastInteractive = c.t.Add(-2 * busyWindow)
	require.Equal(t, map[wire.Lane]int{wire.LaneInteractive: 20}, formBatch(t, l, c))
	require.Equal(t, 1, l.heldCount(), "the second 20-document job did not fit the 24 left to interactive")
	src.jobs[wire.LaneInteractive] = jobsOf(wire.LaneInteractive, 1, 4)
	b := NewBatcher[*pending](32, 0, 0, c.now)
	require.NoError(t, l.fill(b, false))
	items := b.Flush()
	require.Equal(t, "interactive/1", items[0].job.RequestID, "the held job first")
	require.Len(t, items[0].job.Documents, 20)
	require.Equal(t, map[wire.Lane]int{wire.LaneInteractive: 24}, batchOf(items))
}

// A batch formed again after waiting for an endpoint puts the queries that
// arrived meanwhile first; being few, they go alone, and the bulk that had
// filled the batch waits in order for the next.
func TestReformedBatchTakesNewQueriesFirst(t *testing.T) {
	t.Parallel()
	l, src, c := newTestLanes(nil, jobsOf(wire.LaneBulk, 8, 8))
	l.lastInteractive = c.t.Add(-2 * busyWindow)
	b := NewBatcher[*pending](32, 0, 0, c.now)
	require.NoError(t, l.fill(b, false))
	require.Equal(t, map[wire.Lane]int{wire.LaneBulk: 32}, batchOf(b.Items()))
	src.jobs[wire.LaneInteractive] = jobsOf(wire.LaneInteractive, 3, 1)
	l.holdAll(b.Flush())
	require.NoError(t, l.fill(b, false))
	items := b.Flush()
	require.Equal(t, map[wire.Lane]int{wire.LaneInteractive: 3}, batchOf(items))
	require.Len(t, l.held[wire.LaneBulk], 4, "the bulk waits, in order")
	require.Equal(t, "bulk/0", l.held[wire.LaneBulk][0].job.RequestID)
}

// A failure to fetch is returned, and nothing is lost.
func TestFetchFailureIsReturned(t *testing.T) {
	t.Parallel()
	l, src, c := newTestLanes(jobsOf(wire.LaneInteractive, 1, 1), nil)
	src.err = errors.New("no responders")
	b := NewBatcher[*pending](32, 0, 0, c.now)
	require.ErrorContains(t, l.fill(b, false), "no responders")
	require.Zero(t, b.Len())
}
