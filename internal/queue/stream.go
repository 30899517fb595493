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
	JobsStream      = "EMBED_JOBS" // the interactive lane
	JobsSubject     = "embed.jobs"
	WorkersConsumer = "embed-workers"

	BulkJobsStream      = "EMBED_JOBS_BULK" // the bulk lane
	BulkJobsSubject     = "embed.jobs.bulk"
	BulkWorkersConsumer = "embed-workers-bulk"

	HeartbeatSubject = "embed.workers.heartbeat"
	PingSubject      = "embed.workers.ping"
	// CancelSubject carries the id of a request whose requester stopped
	// waiting (gone, timed out, or failed by another of its jobs): workers
	// drop its jobs not yet sent to the model. Core NATS, best effort.
	CancelSubject = "embed.cancel"

	// ReplyPrefix starts every reply inbox; each api process adds its own id.
	ReplyPrefix = "_INBOX.embed"
)

// Lane is a priority class of jobs, each with its own stream, consumer and
// limits. Workers take interactive jobs first and top batches up with bulk
// ones; a full bulk lane refuses bulk work only.
type Lane string

const (
	// LaneInteractive: /embed, /v1/embeddings, search queries. The default.
	LaneInteractive Lane = "interactive"
	// LaneBulk: the project sync, the reconcile, reindex, and callers who
	// ask for it.
	LaneBulk Lane = "bulk"
)

// Lanes lists the lanes, interactive first.
var Lanes = []Lane{LaneInteractive, LaneBulk}

// ParseLane reads a lane name; empty is interactive.
func ParseLane(s string) (Lane, error) {
	switch Lane(s) {
	case "", LaneInteractive:
		return LaneInteractive, nil
	case LaneBulk:
		return LaneBulk, nil
	}
	return "", fmt.Errorf("priority must be %q or %q, got %q", LaneInteractive, LaneBulk, s)
}

// Stream, Subject and Consumer are the lane's names on the wire.
func (l Lane) Stream() string {
	if l == LaneBulk {
		return BulkJobsStream
	}
	return JobsStream
}

func (l Lane) Subject() string {
	if l == LaneBulk {
		return BulkJobsSubject
	}
	return JobsSubject
}

func (l Lane) Consumer() string {
	if l == LaneBulk {
		return BulkWorkersConsumer
	}
	return WorkersConsumer
}

// BulkJobDocuments is the most documents in one bulk job: bulk requests
// are cut this fine so that a worker serving interactive traffic can send
// a short bulk batch (one job) after which a query waits little.
const BulkJobDocuments = 8

// StreamLimits bound each jobs stream: when it is full, publishing fails at
// once and the api answers 429.
type StreamLimits struct {
	MaxMsgs  int64
	MaxBytes int64
}

// JobsStreamConfig is the work-queue stream of one lane's embedding jobs.
// Jobs are only useful while their requester waits, so they expire after
// an hour whatever happens.
func JobsStreamConfig(lane Lane, l StreamLimits) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        lane.Stream(),
		Description: string(lane) + " embedding jobs; one message per slice of a request",
		Subjects:    []string{lane.Subject()},
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

// WorkersConsumerConfig is the durable pull consumer of a lane all workers
// share. No BackOff: it would replace AckWait; workers nak with their own
// delay.
func WorkersConsumerConfig(lane Lane, o ConsumerOptions) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       lane.Consumer(),
		Description:   "embedding workers, " + string(lane) + " lane",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    o.MaxDeliver,
		MaxAckPending: 10_000,
		MaxWaiting:    1024,
	}
}

// EnsureJobsStream creates a lane's jobs stream or brings its limits and
// placement up to date. The api owns the streams' configuration.
func EnsureJobsStream(ctx context.Context, js jetstream.JetStream, lane Lane, l StreamLimits, p Placement) (jetstream.Stream, error) {
	return ensureStream(ctx, js, JobsStreamConfig(lane, l), p)
}

// EnsureJobsStreams ensures both lanes' streams.
func EnsureJobsStreams(ctx context.Context, js jetstream.JetStream, l StreamLimits, p Placement) error {
	for _, lane := range Lanes {
		if _, err := EnsureJobsStream(ctx, js, lane, l, p); err != nil {
			return err
		}
	}
	return nil
}

// EnsureWorkersConsumer makes sure a lane's jobs stream exists (creating it
// when a worker starts before any api) and creates or updates its consumer.
func EnsureWorkersConsumer(ctx context.Context, js jetstream.JetStream, lane Lane, l StreamLimits, p Placement, o ConsumerOptions) (jetstream.Consumer, error) {
	s, err := js.Stream(ctx, lane.Stream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = ensureStream(ctx, js, JobsStreamConfig(lane, l), p)
	}
	if err != nil {
		return nil, fmt.Errorf("find stream %s: %w", lane.Stream(), err)
	}
	c, err := s.CreateOrUpdateConsumer(ctx, WorkersConsumerConfig(lane, o))
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", lane.Consumer(), err)
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

// ReadStats reads a lane's Stats; a consumer no worker has created yet
// counts zero.
func ReadStats(ctx context.Context, js jetstream.JetStream, lane Lane) (Stats, error) {
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
