// Package queue carries embedding work over NATS JetStream: the jobs stream
// and its consumer, the job and reply envelopes, the api's publish-and-await
// client, worker liveness, and the worker's pull loop.
package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Names on the wire. Changing one is a breaking change for running fleets.
const (
	JobsStream      = "EMBED_JOBS"
	JobsSubject     = "embed.jobs"
	WorkersConsumer = "embed-workers"

	HeartbeatSubject = "embed.workers.heartbeat"
	PingSubject      = "embed.workers.ping"
	// CancelSubject carries the id of a request whose requester stopped
	// waiting (gone, timed out, or failed by another of its jobs): workers
	// drop its jobs not yet sent to the model. Core NATS, best effort.
	CancelSubject = "embed.cancel"

	// ReplyPrefix starts every reply inbox; each api process adds its own id.
	ReplyPrefix = "_INBOX.embed"
)

// StreamLimits bound the jobs stream: when it is full, publishing fails at
// once and the api answers 429.
type StreamLimits struct {
	MaxMsgs  int64
	MaxBytes int64
}

// JobsStreamConfig is the work-queue stream of embedding jobs. Jobs are
// only useful while their requester waits, so they expire after an hour
// whatever happens.
func JobsStreamConfig(l StreamLimits) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        JobsStream,
		Description: "embedding jobs; one message per slice of a request",
		Subjects:    []string{JobsSubject},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardNew,
		MaxMsgs:     l.MaxMsgs,
		MaxBytes:    l.MaxBytes,
		MaxAge:      time.Hour,
		Duplicates:  2 * time.Minute,
	}
}

// ConsumerOptions configure the shared durable pull consumer.
type ConsumerOptions struct {
	AckWait    time.Duration
	MaxDeliver int
}

// WorkersConsumerConfig is the one durable pull consumer all workers share.
// No BackOff: it would replace AckWait; workers nak with their own delay.
func WorkersConsumerConfig(o ConsumerOptions) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       WorkersConsumer,
		Description:   "embedding workers",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    o.MaxDeliver,
		MaxAckPending: 10_000,
		MaxWaiting:    1024,
	}
}

// EnsureJobsStream creates the jobs stream or brings its limits and
// placement up to date. The api owns the stream's configuration.
func EnsureJobsStream(ctx context.Context, js jetstream.JetStream, l StreamLimits, p Placement) (jetstream.Stream, error) {
	return ensureStream(ctx, js, JobsStreamConfig(l), p)
}

// EnsureWorkersConsumer makes sure the jobs stream exists (creating it when a
// worker starts before any api) and creates or updates the consumer.
func EnsureWorkersConsumer(ctx context.Context, js jetstream.JetStream, l StreamLimits, p Placement, o ConsumerOptions) (jetstream.Consumer, error) {
	s, err := js.Stream(ctx, JobsStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = ensureStream(ctx, js, JobsStreamConfig(l), p)
	}
	if err != nil {
		return nil, fmt.Errorf("find stream %s: %w", JobsStream, err)
	}
	c, err := s.CreateOrUpdateConsumer(ctx, WorkersConsumerConfig(o))
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", WorkersConsumer, err)
	}
	return c, nil
}

// NewJetStream is jetstream.New with an error that says what failed.
func NewJetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return js, nil
}

// Stats is the state of the jobs stream and the workers' consumer.
type Stats struct {
	Messages   uint64
	Bytes      uint64
	AckPending int
	Waiting    int // pull requests of idle workers
}

// ReadStats reads Stats; a consumer no worker has created yet counts zero.
func ReadStats(ctx context.Context, js jetstream.JetStream) (Stats, error) {
	s, err := js.Stream(ctx, JobsStream)
	if err != nil {
		return Stats{}, fmt.Errorf("stream %s: %w", JobsStream, err)
	}
	si, err := s.Info(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("stream %s info: %w", JobsStream, err)
	}
	st := Stats{Messages: si.State.Msgs, Bytes: si.State.Bytes}
	c, err := s.Consumer(ctx, WorkersConsumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("consumer %s: %w", WorkersConsumer, err)
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return st, fmt.Errorf("consumer %s info: %w", WorkersConsumer, err)
	}
	st.AckPending, st.Waiting = ci.NumAckPending, ci.NumWaiting
	return st, nil
}
