// Package stage starts a process in named stages, in the order given, each
// returning the stop that undoes it, and stops them in reverse: the
// pattern of loki's modules, small. It also holds the goroutines a process
// runs until it decides to stop them (Background).
package stage

import (
	"context"
	"sync"

	"go.uber.org/zap"
)

// Stage is one named step of a start. Start returns the stop that undoes
// it, nil when there is nothing to undo.
type Stage struct {
	Name  string
	Start func(ctx context.Context) (stop func(), err error)
}

// Stack holds the stops of the stages that started, the last on top.
type Stack struct {
	Log   *zap.Logger
	stops []named
}

type named struct {
	name string
	stop func()
}

// Up starts stages in order. When one fails, what started is stopped, in
// reverse, and its error is returned.
func (s *Stack) Up(ctx context.Context, stages ...Stage) error {
	for _, st := range stages {
		stop, err := st.Start(ctx)
		if err != nil {
			s.Log.Debug("stage failed; stopping what started", zap.String("stage", st.Name), zap.Error(err))
			s.Stop()
			return err
		}
		s.Push(st.Name, stop)
	}
	return nil
}

// Push adds a stop (nil: none) on top, as a stage that started.
func (s *Stack) Push(name string, stop func()) {
	if stop != nil {
		s.stops = append(s.stops, named{name, stop})
	}
}

// Stop runs every stop, last first. It is safe to call again.
func (s *Stack) Stop() {
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.Log.Debug("stopping", zap.String("stage", s.stops[i].name))
		s.stops[i].stop()
	}
	s.stops = nil
}

// Background is a goroutine a process owns, with one way to stop it: it
// runs on a context that ends only when stopped, so that the process
// decides when (the in-process worker after HTTP and the sync).
type Background struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	once   sync.Once
}

// Go runs fn in the background on a context that keeps ctx's values but
// not its end.
func Go(ctx context.Context, fn func(context.Context) error) *Background {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b := &Background{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		b.err = fn(ctx)
	}()
	return b
}

// Done is closed when fn has returned; for a nil Background, a channel
// that is never ready.
func (b *Background) Done() <-chan struct{} {
	if b == nil {
		return nil
	}
	return b.done
}

// Stop ends fn and returns its error; again, it returns the same.
func (b *Background) Stop() error {
	b.once.Do(b.cancel)
	<-b.done
	return b.err
}
