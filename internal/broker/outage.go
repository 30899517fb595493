package broker

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/waywo/embed/internal/backoff"
)

// Outage paces a loop whose fetches fail (a stream without a leader, NATS
// away): each failure waits a jittered, growing delay, and the log gets one
// line when the failures start and one when they end, whatever their
// number. Not safe for concurrent use: one per loop.
type Outage struct {
	What string      // what fails, for the log: "fetch jobs"
	Log  *zap.Logger // with the loop's own fields
	// Counted, when set, is called on every failure (a metric).
	Counted func()
	Min     time.Duration // first delay; default 100 ms
	Max     time.Duration // cap; default 5 s

	failing  bool
	since    time.Time
	failures int
}

// Failed records err and waits before the next attempt, or until ctx ends.
func (o *Outage) Failed(ctx context.Context, err error) {
	if o.Counted != nil {
		o.Counted()
	}
	if !o.failing {
		o.failing, o.since, o.failures = true, time.Now(), 0
		o.Log.Warn(o.What+" failing; backing off until it works again", zap.Error(err))
	}
	o.failures++
	b := backoff.Policy{First: o.Min, Max: o.Max, Jitter: true}
	if b.First <= 0 {
		b.First = 100 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = 5 * time.Second
	}
	t := time.NewTimer(b.Delay(o.failures))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// OK records a success, logging the end of an outage.
func (o *Outage) OK() {
	if o.failing {
		o.Log.Info(o.What+" works again", zap.Duration("after", time.Since(o.since)), zap.Int("failures", o.failures))
		o.failing = false
	}
}

// Retry runs fn until it succeeds, fails with ErrStreamDoesNotFit (a
// setting must change), or ctx ends, giving each try at most 5 s: a NATS
// cluster that is still electing leaders leaves some requests unanswered
// for a while. Failures are paced and logged as an Outage of what. A try
// in flight when ctx ends is let finish (within its 5 s): the server may be
// creating a stream for it, and a stop that went on to shut the embedded
// server down meanwhile would leave that stream's store running.
func Retry(ctx context.Context, what string, log *zap.Logger, fn func(ctx context.Context) error) error {
	o := &Outage{What: what, Log: log, Max: 2 * time.Second}
	for {
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err := fn(tctx)
		cancel()
		if err == nil {
			o.OK()
			return nil
		}
		if errors.Is(err, ErrStreamDoesNotFit) || ctx.Err() != nil {
			return err
		}
		o.Failed(ctx, err)
	}
}
