package broker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// StreamHealth says whether a stream (the api's: the interactive jobs
// stream) can take work now, from three
// sources: a periodic look at the stream (does it answer, has it a
// leader), the outcome of the latest publish, and a fault of the embedded
// server's store. /health turns a problem into 503 with its reason.
type StreamHealth struct {
	stream string
	label  string // what the stream is, for messages: "jobs stream"
	log    *zap.Logger

	mu       sync.Mutex
	infoErr  error     // the latest look at the stream
	pubErr   error     // the latest publish, when it failed
	pubSince time.Time // first of the failing publishes
	pubLast  time.Time // the latest failing publish
	storeErr error     // the embedded store cannot write
	// behind are the stream's copies not current at the latest look;
	// degraded names those not current at two looks running.
	behind   map[string]string
	degraded string
}

// publishFailureCounts is how long a failed publish keeps /health at 503
// when no publish follows: an idle api must not stay unhealthy for ever
// after an election it has long recovered from.
const publishFailureCounts = 10 * time.Second

// NewStreamHealth returns a health that knows of no problem yet.
func NewStreamHealth(label, stream string, log *zap.Logger) *StreamHealth {
	return &StreamHealth{stream: stream, label: label, log: log.Named("stream")}
}

// Err is the current problem, or nil when the stream can take work.
func (h *StreamHealth) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.storeErr != nil:
		return h.storeErr
	case h.infoErr != nil:
		return h.infoErr
	case h.pubErr != nil && time.Since(h.pubLast) < publishFailureCounts:
		return fmt.Errorf("%s %s cannot take a publish since %s: %w", h.label, h.stream, h.pubSince.UTC().Format(time.RFC3339), h.pubErr)
	}
	return nil
}

// StoreFault is the problem that makes publishing pointless: the store
// cannot write, so every publish would wait for an acknowledgement that
// never comes.
func (h *StreamHealth) StoreFault() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.storeErr
}

// Published records a publish's outcome; the first failure and the
// recovery are logged, not each one.
func (h *StreamHealth) Published(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case err == nil && h.pubErr != nil:
		h.log.Info("stream takes publishes again", zap.String("stream", h.stream), zap.Duration("after", time.Since(h.pubSince)))
		h.pubErr = nil
	case err != nil && h.pubErr == nil:
		h.log.Warn("stream refuses publishes", zap.String("stream", h.stream), zap.Error(err))
		h.pubErr, h.pubSince, h.pubLast = err, time.Now(), time.Now()
	case err != nil:
		h.pubErr, h.pubLast = err, time.Now()
	}
}

// SetStoreFault records (err non-nil) or clears (nil) a fault of the
// embedded server's store.
func (h *StreamHealth) SetStoreFault(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.storeErr = err
}

// Check looks at the stream once: it must answer within 2 s and, in
// a cluster, have a leader.
func (h *StreamHealth) Check(ctx context.Context, js jetstream.JetStream) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err := h.check(ctx, js)
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case err != nil && h.infoErr == nil:
		h.log.Warn("stream unavailable", zap.String("stream", h.stream), zap.Error(err))
	case err == nil && h.infoErr != nil:
		h.log.Info("stream available again", zap.String("stream", h.stream))
	}
	h.infoErr = err
	return err
}

// Degraded names the stream's copies that are not current (offline, or
// behind their leader) at two looks running, or is empty: the stream still
// serves, with fewer copies than it has. A nats-server whose disk filled
// disables JetStream until it is restarted, and stays behind.
func (h *StreamHealth) Degraded() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.degraded
}

// lookAtCopies records which copies are not current now.
func (h *StreamHealth) lookAtCopies(ci *jetstream.ClusterInfo) {
	now := map[string]string{}
	if ci != nil {
		for _, r := range ci.Replicas {
			switch {
			case r.Offline:
				now[r.Name] = "offline"
			case !r.Current:
				now[r.Name] = fmt.Sprintf("behind by %d operations", r.Lag)
			}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var still []string
	for name, state := range now {
		if _, ok := h.behind[name]; ok {
			still = append(still, name+" ("+state+")")
		}
	}
	h.behind = now
	slices.Sort(still)
	degraded := ""
	if len(still) > 0 {
		degraded = fmt.Sprintf("%s %s has copies that are not current, on %s; it serves from the others (a nats-server whose disk filled stays so until it is restarted)",
			h.label, h.stream, strings.Join(still, ", "))
	}
	switch {
	case degraded != "" && h.degraded == "":
		h.log.Warn("stream copies not current", zap.String("stream", h.stream), zap.Strings("copies", still))
	case degraded == "" && h.degraded != "":
		h.log.Info("stream copies current again", zap.String("stream", h.stream))
	}
	h.degraded = degraded
}

func (h *StreamHealth) check(ctx context.Context, js jetstream.JetStream) error {
	s, err := js.Stream(ctx, h.stream)
	if err != nil {
		return fmt.Errorf("%s %s does not answer: %w", h.label, h.stream, err)
	}
	ci := s.CachedInfo().Cluster
	h.lookAtCopies(ci)
	if ci != nil && ci.Leader == "" && len(ci.Replicas) > 0 {
		return fmt.Errorf("%s %s has no leader (an election is under way, or too few of its %d servers are up)", h.label, h.stream, len(ci.Replicas)+1)
	}
	return nil
}

// Run checks the stream every interval until ctx ends.
func (h *StreamHealth) Run(ctx context.Context, js jetstream.JetStream, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		_ = h.Check(ctx, js)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
