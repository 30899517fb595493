// Endpoints: which Ollama takes the next batch, and which can embed at all.

package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/waywo/embed/internal/backoff"
	"github.com/waywo/embed/internal/engine"
	"github.com/waywo/embed/internal/wire"
)

// awaitIdle waits for a ready endpoint to take the batch — one with no call
// in flight if there is one now, one with room for another call if the
// batch is full or more jobs waited than it holds — telling JetStream the
// held jobs are in progress meanwhile. While it waits, the interactive
// lane's standing pull brings the queries that arrive into the lanes. It
// returns nil when stopping or when no endpoint is ready any more.
func (w *Worker) awaitIdle(ctx context.Context, b *Batcher[*pending], l *lanes, s *pulls) (r *runner, waited bool) {
	select {
	case r := <-w.idle:
		return r, false
	default:
	}
	var extra chan *runner // nil, never ready, unless more than the batch waits
	if b.Full() || l.heldCount() > 0 {
		extra = w.extra
	}
	select {
	case r := <-extra:
		return r, false
	default:
	}
	tick := time.NewTicker(w.opts.Consumer.AckWait / 3)
	defer tick.Stop()
	for {
		ch, ok := w.anyReady()
		if !ok {
			return nil, true
		}
		if err := s.openBusy(standingMax - len(l.held[wire.LaneInteractive])); err != nil {
			w.log.Debug("standing pull on the interactive lane failed", zap.Error(err))
		}
		select {
		case r := <-w.idle:
			return r, true
		case r := <-extra:
			return r, true
		case m, ok := <-s.busy.arrivals():
			if p := s.busy.job(w, m, ok); p != nil {
				l.hold(p)
			}
		case m, ok := <-s.free.arrivals():
			if p := s.free.job(w, m, ok); p != nil {
				l.hold(p)
			}
		case <-tick.C:
			for _, p := range b.Items() {
				_ = p.msg.InProgress()
			}
			for _, p := range l.all() {
				_ = p.msg.InProgress()
			}
		case <-ch:
		case <-ctx.Done():
			return nil, true
		}
	}
}

// runLoop offers r to the dispatcher — on idle while it has no call in
// flight, on extra while it has room for another — and runs what it is
// handed, up to CallsPerHost batches at once. It returns when ctx ends
// and its batches in flight have finished.
func (w *Worker) runLoop(ctx, workCtx context.Context, r *runner) {
	var calls sync.WaitGroup
	defer calls.Wait()
	finished := make(chan struct{}, w.opts.CallsPerHost)
	inFlight := 0
	for {
		ch, ready := w.readiness(r)
		offer := w.idle
		switch {
		case inFlight > 0 && inFlight < w.opts.CallsPerHost:
			offer = w.extra
		case inFlight > 0:
			offer = nil // full: wait for a call to finish
		}
		if !ready {
			offer = nil
		}
		select {
		case offer <- r:
			if b := <-r.work; len(b.items) > 0 {
				inFlight = w.addCalling(r, +1)
				calls.Go(func() {
					// The runner is free for the next call once the server
					// has computed this one's vectors (engine.Computed),
					// while this call's reply is still read and settled;
					// at the latest when the call ends.
					var once sync.Once
					free := func() { once.Do(func() { finished <- struct{}{} }) }
					w.process(ctx, workCtx, r, b, free)
					free()
				})
			}
		case <-finished:
			inFlight = w.addCalling(r, -1)
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// Ready says whether any endpoint can embed now and, if none can, why.
func (w *Worker) Ready() (bool, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	reason := ""
	for _, r := range w.runners {
		if r.ready {
			return true, ""
		}
		if reason == "" {
			reason = r.model.Host() + ": " + r.reason
		}
	}
	return false, reason
}

func (w *Worker) readiness(r *runner) (<-chan struct{}, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed, r.ready
}

func (w *Worker) anyReady() (<-chan struct{}, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.runners {
		if r.ready {
			return w.changed, true
		}
	}
	return w.changed, false
}

func (w *Worker) setReady(r *runner, ready bool, reason string) {
	w.mu.Lock()
	if r.ready == ready {
		r.reason = reason
		w.mu.Unlock()
		return
	}
	r.ready, r.reason = ready, reason
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
	if ready {
		w.log.Info("endpoint ready", zap.String("ollama", r.model.Host()))
	} else {
		w.log.Warn("endpoint not ready", zap.String("ollama", r.model.Host()), zap.String("reason", reason))
	}
	w.announce(false)
}

// addCalling counts a call r's server starts (+1) or has computed (-1),
// waking the waits on freedSignal for the latter, and returns the calls it
// has now.
func (w *Worker) addCalling(r *runner, delta int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if delta < 0 {
		close(w.freed)
		w.freed = make(chan struct{})
	}
	r.calling += delta
	return r.calling
}

// freedSignal is closed when an endpoint next finishes a call.
func (w *Worker) freedSignal() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.freed
}

// anyFree says whether a ready endpoint has room for a call now.
func (w *Worker) anyFree() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.runners {
		if r.ready && r.calling < w.opts.CallsPerHost {
			return true
		}
	}
	return false
}

func (w *Worker) setBusy(r *runner, delta int) {
	w.mu.Lock()
	r.busy += delta
	w.mu.Unlock()
}

// prepareDelay paces the tries of a model server that cannot be reached:
// 0.5 s, doubling, at most 10 s.
var prepareDelay = backoff.Policy{First: 500 * time.Millisecond, Max: 10 * time.Second}

// prepare readies r's model, trying again while its server cannot be
// reached (a worker started before its Ollama), with one log line when the
// wait starts and one when it ends. A model that is missing or unfit is
// returned: waiting cannot help.
func (w *Worker) prepare(ctx context.Context, r *runner) error {
	var since time.Time
	for attempt := 1; ; attempt++ {
		err := r.model.Prepare(ctx)
		if err == nil {
			if !since.IsZero() {
				w.log.Info("model server answers; model ready", zap.String("ollama", r.model.Host()), zap.Duration("waited", time.Since(since)))
			}
			w.mu.Lock()
			r.prepared = true
			w.mu.Unlock()
			w.setReady(r, true, "")
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, engine.ErrUnavailable) {
			return err
		}
		if since.IsZero() {
			since = time.Now()
			w.log.Warn("waiting for the model server: not reachable yet; trying again until it is", zap.String("ollama", r.model.Host()), zap.Error(err))
		}
		w.setReady(r, false, "waiting for the model server at "+r.model.Host()+": "+err.Error())
		t := time.NewTimer(prepareDelay.Delay(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// watch is the stall watchdog of one call of n inputs on r: once the call
// has run stallAfter, r counts stalled — unless r answered another call
// meanwhile, which an engine with a deep queue of calls in flight does
// while this one waits its turn: then the watch goes on from that answer.
// end stops it; answered says the call succeeded, and counts as an answer.
func (w *Worker) watch(r *runner, n int) (end func(answered bool)) {
	if w.opts.StallTimeout <= 0 {
		return func(answered bool) {
			if answered {
				w.noteAnswer(r)
			}
		}
	}
	after := w.stallAfter(r, n)
	started := w.opts.Now()
	var mu sync.Mutex
	ended := false
	var t *time.Timer
	check := func() {
		mu.Lock()
		defer mu.Unlock()
		if ended {
			return
		}
		if quiet := w.opts.Now().Sub(w.lastAnswer(r, started)); quiet < after {
			t.Reset(after - quiet)
			return
		}
		w.stalled(r, fmt.Sprintf("a call of %d inputs got no answer, nor did any other call on it, in %s", n, after.Round(time.Millisecond)))
	}
	mu.Lock()
	t = time.AfterFunc(after, check)
	mu.Unlock()
	return func(answered bool) {
		mu.Lock()
		ended = true
		t.Stop()
		mu.Unlock()
		if answered {
			w.noteAnswer(r)
		}
	}
}

// noteAnswer records that r answered a call now.
func (w *Worker) noteAnswer(r *runner) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r.answered = w.opts.Now()
}

// lastAnswer is when r last answered a call, or since if that was before.
func (w *Worker) lastAnswer(r *runner, since time.Time) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	if r.answered.After(since) {
		return r.answered
	}
	return since
}

// stallAfter is how long a call of n inputs on r may run before r counts
// stalled: StallTimeout, plus 8 times what n inputs took lately.
func (w *Worker) stallAfter(r *runner, n int) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.opts.StallTimeout + 8*time.Duration(n)*r.perInput
}

// learn notes what a successful call of n inputs took.
func (w *Worker) learn(r *runner, took time.Duration, n int) {
	if n == 0 {
		return
	}
	per := took / time.Duration(n)
	w.mu.Lock()
	defer w.mu.Unlock()
	if r.perInput == 0 {
		r.perInput = per
	} else {
		r.perInput = (3*r.perInput + per) / 4
	}
}

// callContext is the context of one model call on r: it ends with parent,
// or when r is found stalled (the call's batch then goes back to the
// queue). stall says which of the two. A call that begins on a runner
// already found stalled (its batch was handed over just before the stall
// was seen) gets a stall that has ended: its batch goes back at once,
// rather than waiting on a server nothing would cancel it from again.
func (w *Worker) callContext(r *runner, parent context.Context) (ctx, stall context.Context, done func()) {
	w.mu.Lock()
	stall = r.stall
	if r.stalled {
		stall = stalledAlready
	}
	w.mu.Unlock()
	ctx, cancel := context.WithCancel(parent)
	stop := context.AfterFunc(stall, cancel)
	return ctx, stall, func() { stop(); cancel() }
}

// rest takes r out of service for d, the Retry-After of its 429 (1 s when
// it gave none): the heartbeat's probes leave it alone until then, and
// make it ready again after.
func (w *Worker) rest(r *runner, d time.Duration, err error) {
	if d <= 0 {
		d = time.Second
	}
	w.mu.Lock()
	r.restUntil = w.opts.Now().Add(d)
	w.mu.Unlock()
	w.log.Warn("model server busy: resting it as it asked, its batch goes to another", zap.String("server", r.model.Host()),
		zap.Duration("retry_after", d), zap.Error(err))
	w.setReady(r, false, fmt.Sprintf("busy (429): resting %s as asked", d))
}

// stalledAlready is the stall context of a call begun on a stalled runner.
var stalledAlready = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// stalled marks r's server stalled: its calls in flight give their batches
// back, it takes no jobs, and it is ready again only once a test embedding
// answers (see probeAll).
func (w *Worker) stalled(r *runner, why string) {
	w.mu.Lock()
	if r.stalled {
		w.mu.Unlock()
		return
	}
	r.stalled = true
	r.cancelStall()
	r.stall, r.cancelStall = context.WithCancel(context.Background())
	w.mu.Unlock()
	w.log.Warn("model server stalled: giving its jobs back to the queue, and taking none until it answers again",
		zap.String("ollama", r.model.Host()), zap.String("why", why))
	w.setReady(r, false, "stalled: "+why)
}
