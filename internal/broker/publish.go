package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

var (
	// ErrStreamFull means a stream is at its limits and refuses what is
	// published to it (discard new): the api answers 429.
	ErrStreamFull = errors.New("queue full")
	// ErrUnavailable means NATS or JetStream could not take a publish.
	ErrUnavailable = errors.New("queue unavailable")
)

// PublishTimeout bounds the wait for a stream to acknowledge one publish.
// A store normally answers in a millisecond; one that cannot write (a full
// disk, a stream between leaders) does not answer at all, and whoever
// published should hear so, not wait its whole timeout.
const PublishTimeout = 5 * time.Second

// errCodeStoreFailed is JetStream's JSStreamStoreFailedF: the stream refused
// to store the message, as it does when a limit is reached (discard new).
const errCodeStoreFailed = 10077

// PublishError says what a failed JetStream publish to stream means: a full
// stream (ErrStreamFull); the caller's own context ending (that error, as it
// is); else a stream that could not take it (ErrUnavailable), naming the
// stream when it did not acknowledge in time.
func PublishError(ctx context.Context, err error, stream string) error {
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr) && (apiErr.ErrorCode == errCodeStoreFailed || strings.Contains(apiErr.Description, "maximum")):
		return fmt.Errorf("%w: %s", ErrStreamFull, apiErr.Description)
	case ctx.Err() != nil:
		return fmt.Errorf("publishing: %w", err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %s did not acknowledge within %s (a store that cannot write, or a stream between leaders)", ErrUnavailable, stream, PublishTimeout)
	}
	return fmt.Errorf("%w: publish: %w", ErrUnavailable, err)
}
