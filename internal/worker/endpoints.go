// Endpoints: which Ollama takes the next batch, and which can embed at all.

package worker

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
)

// awaitIdle waits for a ready endpoint to take the batch — one with no call
// in flight if there is one now, one with room for another call if the
// batch is full — telling JetStream the held jobs are in progress meanwhile.
// It returns nil when stopping or when no endpoint is ready any more.
func (w *Worker) awaitIdle(ctx context.Context, b *Batcher[*pending], held []*pending) (r *runner, waited bool) {
	select {
	case r := <-w.idle:
		return r, false
	default:
	}
	var extra chan *runner // nil, never ready, unless the batch is full
	if b.Full() || len(held) > 0 {
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
		select {
		case r := <-w.idle:
			return r, true
		case r := <-extra:
			return r, true
		case <-tick.C:
			for _, p := range b.Items() {
				_ = p.msg.InProgress()
			}
			for _, p := range held {
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
				inFlight++
				calls.Go(func() {
					w.process(ctx, workCtx, r, b)
					finished <- struct{}{}
				})
			}
		case <-finished:
			inFlight--
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
		w.log.Info("endpoint ready again", zap.String("ollama", r.model.Host()))
	} else {
		w.log.Warn("endpoint not ready", zap.String("ollama", r.model.Host()), zap.String("reason", reason))
	}
	w.announce(false)
}

func (w *Worker) setBusy(r *runner, delta int) {
	w.mu.Lock()
	r.busy += delta
	w.mu.Unlock()
}
