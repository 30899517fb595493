package dispatch

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/wire"
)

// EnsureJobsStream creates a lane's jobs stream or brings its limits and
// placement up to date. The api owns the streams' configuration.
func EnsureJobsStream(ctx context.Context, js jetstream.JetStream, lane wire.Lane, l wire.StreamLimits, p broker.Placement) (jetstream.Stream, error) {
	return broker.EnsureStream(ctx, js, wire.JobsStreamConfig(lane, l), p)
}

// EnsureJobsStreams ensures both lanes' streams.
func EnsureJobsStreams(ctx context.Context, js jetstream.JetStream, l wire.StreamLimits, p broker.Placement) error {
	for _, lane := range wire.Lanes {
		if _, err := EnsureJobsStream(ctx, js, lane, l, p); err != nil {
			return err
		}
	}
	return nil
}

// Stats is the state of the jobs stream and the workers' consumer.
type Stats struct {
	Messages   uint64
	Bytes      uint64
	AckPending int
	Waiting    int // pull requests of idle workers
}

// ReadStats reads a lane's Stats; a consumer no worker has created yet
// counts zero.
func ReadStats(ctx context.Context, js jetstream.JetStream, lane wire.Lane) (Stats, error) {
	s, err := js.Stream(ctx, lane.Stream())
	if err != nil {
		return Stats{}, fmt.Errorf("stream %s: %w", lane.Stream(), err)
	}
	si, err := s.Info(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("stream %s info: %w", lane.Stream(), err)
	}
	st := Stats{Messages: si.State.Msgs, Bytes: si.State.Bytes}
	c, err := s.Consumer(ctx, lane.Consumer())
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("consumer %s: %w", lane.Consumer(), err)
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return st, fmt.Errorf("consumer %s info: %w", lane.Consumer(), err)
	}
	st.AckPending, st.Waiting = ci.NumAckPending, ci.NumWaiting
	return st, nil
}
