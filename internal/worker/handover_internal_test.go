package worker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCallCostLearnsPerInputAndPerToken(t *testing.T) {
	var c callCost
	// 1 ms an input and 20 µs a token, calls of varied shapes.
	cost := func(n, tok int) time.Duration {
		return time.Duration(n)*time.Millisecond + time.Duration(tok)*20*time.Microsecond
	}
	shapes := [][2]int{{1, 20}, {8, 1600}, {4, 100}, {16, 3200}, {2, 400}}
	for i, s := range shapes {
		if i == minCostCalls-1 {
			_, ok := c.predict(1, 20)
			require.False(t, ok, "too few calls seen to predict")
		}
		c.learn(s[0], s[1], cost(s[0], s[1]))
	}
	for _, s := range [][2]int{{1, 20}, {32, 6400}, {8, 160}} {
		d, ok := c.predict(s[0], s[1])
		require.True(t, ok)
		require.InDelta(t, cost(s[0], s[1]).Seconds(), d.Seconds(), 1e-6, "inputs %d, tokens %d", s[0], s[1])
	}
}

// A server that spends the same on every input, whatever its tokens (one
// input at a time, short inputs): the fit would give tokens a negative
// cost, so the cost is per input alone.
func TestCallCostFallsBackToPerInput(t *testing.T) {
	var c callCost
	for _, s := range [][2]int{{1, 20}, {8, 1600}, {1, 25}, {8, 1500}} {
		c.learn(s[0], s[1], time.Duration(s[0])*5*time.Millisecond+300*time.Microsecond)
	}
	d, ok := c.predict(8, 1600)
	require.True(t, ok)
	require.InDelta(t, 40.3e-3, d.Seconds(), 0.5e-3)
	d, _ = c.predict(1, 20)
	require.InDelta(t, 5e-3, d.Seconds(), 0.5e-3)
}

// A call's handover is due lead before it is expected to have computed,
// counting from when it was sent, or, queued behind another call, from when
// that one computed; what it took is learned from the same start.
func TestHandoverIsDueLeadBeforeTheCallComputes(t *testing.T) {
	t0 := time.Unix(1000, 0)
	p := &pace{lead: 2 * time.Millisecond}
	for range minCostCalls {
		p.cost.learn(1, 0, 10*time.Millisecond)
	}
	first := p.begin(t0, 1, 0)
	due, ok := first.plan(10 * time.Millisecond)
	require.True(t, ok)
	require.Equal(t, t0.Add(8*time.Millisecond), due)

	second := p.begin(t0.Add(8*time.Millisecond), 2, 0) // sent at the handover: queued behind first
	first.end(t0.Add(10*time.Millisecond), true)        // computed as expected: skew stays
	require.Zero(t, p.skew)
	due, _ = second.plan(20 * time.Millisecond)
	require.Equal(t, t0.Add(28*time.Millisecond), due, "from when first computed, not from when second was sent")
	second.end(t0.Add(30*time.Millisecond), true)
	d, _ := p.cost.predict(1, 0)
	require.Equal(t, 10*time.Millisecond, d, "second's 20 ms for 2 inputs counted from first's end")

	third := p.begin(t0.Add(40*time.Millisecond), 1, 0) // sent to an idle server
	require.Nil(t, third.prev)
	due, _ = third.plan(10 * time.Millisecond)
	require.Equal(t, t0.Add(48*time.Millisecond), due)
	// It computed 3 ms before its handover was due (its cost, learned with
	// the trips, was late): the next goes earlier.
	third.end(t0.Add(45*time.Millisecond), true)
	require.Equal(t, (2*time.Millisecond+3*time.Millisecond)/2, p.skew)
	fourth := p.begin(t0.Add(50*time.Millisecond), 1, 0)
	due, _ = fourth.plan(10 * time.Millisecond)
	require.Equal(t, t0.Add(50*time.Millisecond+10*time.Millisecond-2*time.Millisecond-p.skew), due)
	fourth.end(t0.Add(51*time.Millisecond), false)
	_, ok = fourth.plan(10 * time.Millisecond)
	require.False(t, ok, "an ended call is not handed over")
}

// However late calls compute, a handover is due at half the expected time
// at the earliest, so that a call does not go as soon as the last one.
func TestHandoverIsNeverDueBeforeHalfTheCall(t *testing.T) {
	t0 := time.Unix(1000, 0)
	p := &pace{lead: 2 * time.Millisecond, skew: 10 * time.Millisecond}
	c := p.begin(t0, 1, 0)
	due, _ := c.plan(10 * time.Millisecond)
	require.Equal(t, t0.Add(5*time.Millisecond), due)
}

// With no lead, or before the cost is known, handOver returns at once and
// frees nothing.
func TestHandOverOffOrUnknownFreesNothing(t *testing.T) {
	for _, p := range []*pace{{lead: 0}, {lead: 2 * time.Millisecond}} {
		if p.lead == 0 {
			for range minCostCalls {
				p.cost.learn(1, 0, 10*time.Millisecond)
			}
		}
		c := p.begin(time.Now(), 1, 0)
		freed := false
		c.handOver(time.Now, func() { freed = true })
		require.False(t, freed)
	}
}
