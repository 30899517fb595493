package projectsync

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/deadletter"
	"github.com/waywo/embed/internal/tracing"
	"github.com/waywo/embed/internal/wire"
)

// eventsStream names the stream in messages.
const eventsStream = "the project events stream " + wire.ProjectsStream

// PublishProjectChanged queues a sync of project id and waits for the
// stream to store it.
func PublishProjectChanged(ctx context.Context, js jetstream.JetStream, id int64, origin string) error {
	return PublishProjectsChanged(ctx, js, []int64{id}, origin)
}

// PublishProjectsChanged queues many at once, waiting for every store ack,
// at most PublishTimeout for each window of them: a stream that cannot
// write never acknowledges, and an async publish has no deadline of its
// own (a reconcile once waited for ever on a full disk).
func PublishProjectsChanged(ctx context.Context, js jetstream.JetStream, ids []int64, origin string) error {
	const window = 512
	for start := 0; start < len(ids); start += window {
		wctx, cancel := context.WithTimeout(ctx, broker.PublishTimeout)
		err := publishWindow(wctx, js, ids[start:min(start+window, len(ids))], origin)
		cancel()
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("%w: the project events stream did not acknowledge within %s", broker.ErrUnavailable, broker.PublishTimeout)
			}
			return err
		}
	}
	return nil
}

func publishWindow(ctx context.Context, js jetstream.JetStream, ids []int64, origin string) error {
	futures := make([]jetstream.PubAckFuture, 0, len(ids))
	for _, id := range ids {
		m := nats.NewMsg(wire.ProjectSubjectPrefix + strconv.FormatInt(id, 10))
		if origin != "" {
			m.Header.Set(HeaderOrigin, origin)
		}
		tracing.Inject(ctx, m.Header) // the sync's span is linked to the request that announced it
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return broker.PublishError(ctx, err, eventsStream)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return broker.PublishError(ctx, err, eventsStream)
		case <-ctx.Done():
			return broker.PublishError(ctx, ctx.Err(), eventsStream)
		}
	}
	return nil
}

// Replay publishes dead project events again to their subjects, as the
// replay's origin, deleting each dead letter once its event is stored, and
// says how many went; the errors of the others are joined. Jobs are not
// replayed: their requester got its error reply and is gone.
func Replay(ctx context.Context, js jetstream.JetStream, dls []deadletter.Stored) (int, error) {
	var errs []error
	replayed := 0
	for _, d := range dls {
		if err := replay(ctx, js, d); err != nil {
			errs = append(errs, err)
			continue
		}
		replayed++
	}
	return replayed, errors.Join(errs...)
}

func replay(ctx context.Context, js jetstream.JetStream, d deadletter.Stored) error {
	if d.Kind != deadletter.KindProjects {
		return fmt.Errorf("dead letter %d is a %s one; only project events can be replayed (a job's requester is gone)", d.Seq, d.Kind)
	}
	if _, err := wire.ProjectIDFromSubject(d.Subject); err != nil {
		return fmt.Errorf("dead letter %d cannot be replayed: %w", d.Seq, err)
	}
	m := nats.NewMsg(d.Subject)
	m.Data = d.Payload
	m.Header.Set(HeaderOrigin, "replay")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		return broker.PublishError(ctx, err, eventsStream)
	}
	return deadletter.Delete(ctx, js, d.Seq)
}
