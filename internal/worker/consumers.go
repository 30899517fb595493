package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/waywo/embed/internal/wire"
)

// EnsureWorkersConsumer creates or updates a lane's consumer, which all
// workers share. The stream is the api's: until it exists (a worker
// started before any api) this fails, and the caller tries again.
func EnsureWorkersConsumer(ctx context.Context, js jetstream.JetStream, lane wire.Lane, o wire.ConsumerOptions) (jetstream.Consumer, error) {
	s, err := js.Stream(ctx, lane.Stream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("stream %s does not exist yet: waiting for an api to create it", lane.Stream())
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
