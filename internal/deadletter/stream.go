// Package deadletter keeps the work that failed for good or ran out of
// attempts — jobs and project events — with its reason and payload, in the
// EMBED_DLQ stream: one writer for the worker, the sync and the watch of
// consumers' given-up messages, and the reading the deadletters command
// does.
package deadletter

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/wire"
)

// The headers a dead letter adds to the failed message's own (the
// stream's names are wire.DeadLetterStream and wire.DeadLetterSubject).
const (
	HeaderReason          = "Embed-Reason"
	HeaderOriginalSubject = "Embed-Original-Subject"
	HeaderDeliveries      = "Embed-Deliveries"
	HeaderFailedAt        = "Embed-Failed-At"
)

// StreamConfig keeps dead letters for 30 days, dropping the
// oldest past 100,000: a flood of poison must not stop the system.
func StreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        wire.DeadLetterStream,
		Description: "failed jobs and project events, with reasons",
		Subjects:    []string{wire.DeadLetterSubject + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     100_000,
		MaxAge:      30 * 24 * time.Hour,
	}
}

// Ensure creates or updates the dead-letter stream.
func Ensure(ctx context.Context, js jetstream.JetStream, p broker.Placement) error {
	_, err := broker.EnsureStream(ctx, js, StreamConfig(), p)
	return err
}

// Kind says what failed: a job or a project event. It is the
// last token of the dead letter's subject.
type Kind string

const (
	KindJobs     Kind = "jobs"
	KindProjects Kind = "projects"
)
