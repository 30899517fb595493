package worker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestBatcher(t *testing.T) {
	t.Parallel()

	setup := func(maxDocs int, wait time.Duration) (*Batcher[string], *fakeClock) {
		clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
		return NewBatcher[string](maxDocs, 0, wait, clock.now), clock
	}

	t.Run("FillsToTheLimitAndRefusesTheOverflow", func(t *testing.T) {
		t.Parallel()
		b, _ := setup(10, 0)
		require.True(t, b.Add("a", 4, 0))
		require.True(t, b.Add("b", 6, 0))
		require.True(t, b.Full())
		require.Zero(t, b.Room())
		require.False(t, b.Add("c", 1, 0))
		require.Equal(t, []string{"a", "b"}, b.Flush())
		require.Zero(t, b.Len())
		require.Equal(t, 10, b.Room(), "no documents left")
		require.False(t, b.Full())
	})

	t.Run("AcceptsAnOversizeItemIntoAnEmptyBatch", func(t *testing.T) {
		t.Parallel()
		b, _ := setup(8, 0)
		require.True(t, b.Add("big", 64, 0))
		require.True(t, b.Full())
		require.False(t, b.Add("small", 1, 0))
		require.Equal(t, []string{"big"}, b.Flush())
	})

	t.Run("WaitCountsFromTheFirstItem", func(t *testing.T) {
		t.Parallel()
		b, clock := setup(8, 10*time.Millisecond)
		require.Zero(t, b.Until(), "an empty batch has nothing to wait for")
		require.True(t, b.Add("a", 1, 0))
		require.Equal(t, 10*time.Millisecond, b.Until())
		clock.t = clock.t.Add(4 * time.Millisecond)
		require.True(t, b.Add("b", 1, 0))
		require.Equal(t, 6*time.Millisecond, b.Until())
		clock.t = clock.t.Add(time.Hour)
		require.Zero(t, b.Until())
		b.Flush()
		require.True(t, b.Add("c", 1, 0))
		require.Equal(t, 10*time.Millisecond, b.Until(), "a new batch starts a new wait")
	})

	t.Run("TokenBudgetCutsBatchesOfLongTexts", func(t *testing.T) {
		t.Parallel()
		clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
		b := NewBatcher[string](32, 1000, 0, clock.now)
		require.True(t, b.Add("query", 1, 20))
		require.True(t, b.Add("query", 1, 20))
		require.False(t, b.Fits(1, 970), "a long text waits for the next batch")
		require.False(t, b.Add("long", 1, 970))
		require.True(t, b.Fits(1, 960))
		require.False(t, b.Full())
		require.True(t, b.Add("fills", 1, 960))
		require.True(t, b.Full(), "the budget is spent with documents to spare")
		b.Flush()
		require.True(t, b.Add("alone", 1, 5000), "a job over the budget goes alone")
		require.True(t, b.Full())
		require.False(t, b.Add("query", 1, 20))
	})

	t.Run("ZeroWaitNeverWaits", func(t *testing.T) {
		t.Parallel()
		b, _ := setup(8, 0)
		require.True(t, b.Add("lone", 1, 0))
		require.Zero(t, b.Until())
		require.False(t, b.Full())
	})
}

// The policy: full (or an item held over) goes at once; with a wait set
// and time left it lingers; after lingering it goes for the wait; with no
// wait it goes because the queue is drained.
func TestBatcherDecides(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Unix(0, 0)}
	b := NewBatcher[string](3, 0, 100*time.Millisecond, clock.now)
	b.Add("a", 1, 0)
	reason, linger := b.Decide(false, false)
	require.Equal(t, FlushWait, reason)
	require.Equal(t, 100*time.Millisecond, linger)
	reason, linger = b.Decide(true, false)
	require.Equal(t, FlushFull, reason, "an item held for the next batch")
	require.Zero(t, linger)
	reason, _ = b.Decide(false, true)
	require.Equal(t, FlushWait, reason)
	clock.t = clock.t.Add(150 * time.Millisecond)
	reason, linger = b.Decide(false, false)
	require.Equal(t, FlushDrain, reason, "the wait is over")
	require.Zero(t, linger)
	b.Add("bc", 2, 0)
	reason, _ = b.Decide(false, true)
	require.Equal(t, FlushFull, reason)

	noWait := NewBatcher[string](3, 0, 0, clock.now)
	noWait.Add("a", 1, 0)
	reason, linger = noWait.Decide(false, false)
	require.Equal(t, FlushDrain, reason)
	require.Zero(t, linger)
}

func BenchmarkBatcher(b *testing.B) {
	bt := NewBatcher[int](32, 0, 0, time.Now)
	for b.Loop() {
		for i := 0; bt.Add(i, 1, 0); i++ {
		}
		_ = bt.Flush()
	}
}
