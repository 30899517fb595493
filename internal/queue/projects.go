package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Names of the project-changed events. The WAYWO backend publishes to
// ProjectSubjectPrefix+<id>; the body is ignored and may be empty.
const (
	ProjectsStream       = "WAYWO_PROJECTS"
	ProjectSubjectPrefix = "waywo.projects.changed."
	ProjectsConsumer     = "embed-sync"

	// HeaderOrigin says who asked for a sync: "event" (absent), "http" or
	// "reconcile". It is for logs only.
	HeaderOrigin = "Embed-Origin"
)

// ProjectsStreamConfig keeps at most one pending event per project: a
// burst of events for one project leaves only the newest, so it costs one
// sync of the latest text. Events are never refused for lack of room.
func ProjectsStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              ProjectsStream,
		Description:       "waywo project-changed events; one pending per project",
		Subjects:          []string{ProjectSubjectPrefix + "*"},
		Retention:         jetstream.WorkQueuePolicy,
		Storage:           jetstream.FileStorage,
		Discard:           jetstream.DiscardOld,
		MaxMsgsPerSubject: 1,
		MaxMsgSize:        64 << 10,
	}
}

// ProjectsConsumerConfig is the api's durable consumer of project events.
// ackWait covers one batch's embedding; the sync naks with its own delay.
func ProjectsConsumerConfig(ackWait time.Duration, maxDeliver int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ProjectsConsumer,
		Description:   "api: sync waywo_projects.description_embedding",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    maxDeliver,
		MaxAckPending: 10_000,
	}
}

// EnsureProjects creates or updates the events stream and the consumer.
func EnsureProjects(ctx context.Context, js jetstream.JetStream, p Placement, ackWait time.Duration, maxDeliver int) (jetstream.Consumer, error) {
	s, err := ensureStream(ctx, js, ProjectsStreamConfig(), p)
	if err != nil {
		return nil, err
	}
	c, err := s.CreateOrUpdateConsumer(ctx, ProjectsConsumerConfig(ackWait, maxDeliver))
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", ProjectsConsumer, err)
	}
	return c, nil
}

// ErrBadProjectID is a project id that is not a positive decimal integer.
var ErrBadProjectID = errors.New("project id must be a positive integer")

// ParseProjectID reads a project id as the backend writes it: decimal
// digits, no sign, no leading zeros, fitting int64, above zero.
func ParseProjectID(s string) (int64, error) {
	if s == "" || s[0] == '0' || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%w, got %q", ErrBadProjectID, s)
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w, got %q", ErrBadProjectID, s)
	}
	return id, nil
}

// ProjectIDFromSubject reads the id from a project-changed subject.
func ProjectIDFromSubject(subject string) (int64, error) {
	rest, ok := strings.CutPrefix(subject, ProjectSubjectPrefix)
	if !ok {
		return 0, fmt.Errorf("subject %q is not %s<id>", subject, ProjectSubjectPrefix)
	}
	return ParseProjectID(rest)
}

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
		wctx, cancel := context.WithTimeout(ctx, PublishTimeout)
		err := publishWindow(wctx, js, ids[start:min(start+window, len(ids))], origin)
		cancel()
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, ErrTimeout) {
				return fmt.Errorf("%w: the project events stream did not acknowledge within %s", ErrQueue, PublishTimeout)
			}
			return err
		}
	}
	return nil
}

func publishWindow(ctx context.Context, js jetstream.JetStream, ids []int64, origin string) error {
	futures := make([]jetstream.PubAckFuture, 0, len(ids))
	for _, id := range ids {
		m := nats.NewMsg(ProjectSubjectPrefix + strconv.FormatInt(id, 10))
		if origin != "" {
			m.Header.Set(HeaderOrigin, origin)
		}
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return publishError(ctx, err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return publishError(ctx, err)
		case <-ctx.Done():
			return publishError(ctx, ctx.Err())
		}
	}
	return nil
}

// ProjectsBacklog is how many project events wait in the stream.
func ProjectsBacklog(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	s, err := js.Stream(ctx, ProjectsStream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}
