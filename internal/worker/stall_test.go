package worker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/engine"
	"github.com/waywo/embed/internal/vector"
)

// idleModel is a Model these tests never call.
type idleModel struct{}

func (idleModel) Host() string                  { return "http://gpu:1" }
func (idleModel) Name() string                  { return "m" }
func (idleModel) Provider() string              { return "test" }
func (idleModel) Prepare(context.Context) error { return nil }
func (idleModel) EmbedAll(context.Context, []string) (engine.Output, error) {
	return engine.Output{}, nil
}
func (idleModel) Fingerprint() vector.Fingerprint { return vector.Fingerprint{} }
func (idleModel) Probe(context.Context, bool) (vector.Fingerprint, error) {
	return vector.Fingerprint{}, nil
}

// A call that was in flight when its server was found stalled ends; so
// does one that begins afterwards (its batch was handed over just before
// the stall was seen), although marking the server stalled again is then
// a no-op. Until the server answers again, every call begins ended; once
// it does, calls run.
func TestCallsOnAStalledServerEnd(t *testing.T) {
	w := New(nil, nil, []Model{idleModel{}}, Options{StallTimeout: 1}, zap.NewNop())
	r := w.runners[0]

	_, inFlight, doneInFlight := w.callContext(r, context.Background())
	defer doneInFlight()
	require.NoError(t, inFlight.Err())

	w.stalled(r, "no answer")
	require.Error(t, inFlight.Err(), "the call in flight gives its batch back")

	_, late, doneLate := w.callContext(r, context.Background())
	defer doneLate()
	w.stalled(r, "no answer again") // what the late call's watchdog would do
	require.Error(t, late.Err(), "a call begun after the stall was seen gives its batch back at once")

	w.mu.Lock()
	r.stalled = false // as probeAll does when a test embedding answers
	w.mu.Unlock()
	_, after, doneAfter := w.callContext(r, context.Background())
	defer doneAfter()
	require.NoError(t, after.Err(), "calls run again once the server answers")
}

// A call waiting its turn in an engine that keeps answering its other
// calls is not a stall; a server that answers nothing for the watch's
// time is.
func TestWatchCountsAnyAnswerAsProgress(t *testing.T) {
	// The watch's time is 20 answers long, so that a loaded machine's
	// late ticks do not look like silence.
	w := New(nil, nil, []Model{idleModel{}}, Options{StallTimeout: 400 * time.Millisecond}, zap.NewNop())
	r := w.runners[0]
	isStalled := func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return r.stalled
	}

	end := w.watch(r, 1)
	tick := time.NewTicker(20 * time.Millisecond)
	for range 60 { // 1.2 s, three times the watch's time
		<-tick.C
		w.noteAnswer(r) // another call on the same engine answered
	}
	tick.Stop()
	require.False(t, isStalled(), "answers to other calls are progress")
	end(true)

	end = w.watch(r, 1)
	defer end(false)
	require.Eventually(t, isStalled, 5*time.Second, 5*time.Millisecond, "nothing answered: stalled")
}
