package projectsync

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/wire"
)

// Headers of the sync (the events' stream, consumer and subjects are
// named in wire).
const (
	// HeaderOrigin says who asked for a sync: "event" (absent), "http" or
	// "reconcile". It is for logs only.
	HeaderOrigin = "Embed-Origin"
	// HeaderProjectID is added to a dead project event: the project.
	HeaderProjectID = "Embed-Project-Id"
)

// ProjectsStreamConfig keeps at most one pending event per project: a
// burst of events for one project leaves only the newest, so it costs one
// sync of the latest text. Events are never refused for lack of room.
func ProjectsStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              wire.ProjectsStream,
		Description:       "waywo project-changed events; one pending per project",
		Subjects:          []string{wire.ProjectSubjectPrefix + "*"},
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
		Durable:       wire.ProjectsConsumer,
		Description:   "api: sync waywo_projects.description_embedding",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    maxDeliver,
		MaxAckPending: 10_000,
	}
}

// EnsureProjects creates or updates the events stream and the consumer.
func EnsureProjects(ctx context.Context, js jetstream.JetStream, p broker.Placement, ackWait time.Duration, maxDeliver int) (jetstream.Consumer, error) {
	s, err := broker.EnsureStream(ctx, js, ProjectsStreamConfig(), p)
	if err != nil {
		return nil, err
	}
	c, err := s.CreateOrUpdateConsumer(ctx, ProjectsConsumerConfig(ackWait, maxDeliver))
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", wire.ProjectsConsumer, err)
	}
	return c, nil
}

// ProjectsBacklog is how many project events wait in the stream.
func ProjectsBacklog(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	s, err := js.Stream(ctx, wire.ProjectsStream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}
