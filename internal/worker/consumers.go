package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/wire"
)

// EnsureWorkersConsumer makes sure a lane's jobs stream exists (creating it
// when a worker starts before any api) and creates or updates its consumer.
func EnsureWorkersConsumer(ctx context.Context, js jetstream.JetStream, lane wire.Lane, l wire.StreamLimits, p broker.Placement, o wire.ConsumerOptions) (jetstream.Consumer, error) {
	s, err := js.Stream(ctx, lane.Stream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = broker.EnsureStream(ctx, js, wire.JobsStreamConfig(lane, l), p)
	}
	if err != nil {
		return nil, fmt.Errorf("find stream %s: %w", lane.Stream(), err)
	}
	c, err := s.CreateOrUpdateConsumer(ctx, wire.WorkersConsumerConfig(lane, o))
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", lane.Consumer(), err)
	}
	return c, nil
}
