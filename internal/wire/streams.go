package wire

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

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
//
// Prioritized gives the interactive lane's consumer nats-server's
// prioritized policy (2.12 and later): every pull on it names
// WorkersPriorityGroup and a priority, and a query goes to the pull with
// the lowest number that waits. Without it every pull is served in turn.
type ConsumerOptions struct {
	AckWait     time.Duration
	MaxDeliver  int
	Prioritized bool
}

// The priorities of pulls on the interactive lane's consumer when it is
// prioritized: a worker with an endpoint free pulls at PullIdle, a worker
// whose endpoints are all busy keeps a pull open at PullBusy, so that a
// query goes to a busy worker only while no free one asks for it.
const (
	WorkersPriorityGroup = "workers"
	PullIdle             = 0
	PullBusy             = 1
)

// WorkersConsumerConfig is the durable pull consumer of a lane all workers
// share. No BackOff: it would replace AckWait; workers nak with their own
// delay.
func WorkersConsumerConfig(lane Lane, o ConsumerOptions) jetstream.ConsumerConfig {
	c := jetstream.ConsumerConfig{
		Durable:       lane.Consumer(),
		Description:   "embedding workers, " + string(lane) + " lane",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    o.MaxDeliver,
		MaxAckPending: 10_000,
		MaxWaiting:    1024,
	}
	if lane == LaneInteractive && o.Prioritized {
		c.PriorityPolicy = jetstream.PriorityPolicyPrioritized
		c.PriorityGroups = []string{WorkersPriorityGroup}
	}
	return c
}
