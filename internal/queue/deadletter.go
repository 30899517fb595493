package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Dead letters: work that failed for good or ran out of attempts, kept
// with its reason and payload so that it can be read and replayed.
const (
	DeadLetterStream  = "EMBED_DLQ"
	DeadLetterSubject = "embed.dlq" // .projects or .jobs

	HeaderReason          = "Embed-Reason"
	HeaderOriginalSubject = "Embed-Original-Subject"
	HeaderDeliveries      = "Embed-Deliveries"
	HeaderFailedAt        = "Embed-Failed-At"
	HeaderProjectID       = "Embed-Project-Id" // on a dead project event: the project
)

// DeadLetterStreamConfig keeps dead letters for 30 days, dropping the
// oldest past 100,000: a flood of poison must not stop the system.
func DeadLetterStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        DeadLetterStream,
		Description: "failed jobs and project events, with reasons",
		Subjects:    []string{DeadLetterSubject + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     100_000,
		MaxAge:      30 * 24 * time.Hour,
	}
}

// EnsureDeadLetters creates or updates the dead-letter stream.
func EnsureDeadLetters(ctx context.Context, js jetstream.JetStream, p Placement) error {
	_, err := ensureStream(ctx, js, DeadLetterStreamConfig(), p)
	return err
}

// DeadLetterKind says what failed: a job or a project event. It is the
// last token of the dead letter's subject.
type DeadLetterKind string

const (
	KindJobs     DeadLetterKind = "jobs"
	KindProjects DeadLetterKind = "projects"
)

// DeadLetter is one failure to record.
type DeadLetter struct {
	Kind       DeadLetterKind
	Subject    string // where the work was published
	Reason     string
	Deliveries uint64
	Header     nats.Header // the original headers, kept
	Payload    []byte
}

// PublishDeadLetter stores d and waits for the stream's ack.
func PublishDeadLetter(ctx context.Context, js jetstream.JetStream, d DeadLetter, at time.Time) error {
	m := nats.NewMsg(DeadLetterSubject + "." + string(d.Kind))
	for k, vs := range d.Header {
		if k == "Nats-Msg-Id" { // would dedupe two failures of one job
			continue
		}
		m.Header[k] = vs
	}
	m.Header.Set(HeaderReason, d.Reason)
	m.Header.Set(HeaderOriginalSubject, d.Subject)
	m.Header.Set(HeaderDeliveries, strconv.FormatUint(d.Deliveries, 10))
	m.Header.Set(HeaderFailedAt, at.UTC().Format(time.RFC3339Nano))
	m.Data = d.Payload
	if _, err := js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("dead letter: %w", err)
	}
	return nil
}

// StoredDeadLetter is a dead letter as read back from the stream.
type StoredDeadLetter struct {
	Seq        uint64
	Kind       DeadLetterKind
	Subject    string
	Reason     string
	Deliveries string
	FailedAt   string
	Header     nats.Header
	Payload    []byte
}

// ListDeadLetters reads up to limit dead letters of kind ("" for all),
// oldest first.
func ListDeadLetters(ctx context.Context, js jetstream.JetStream, kind DeadLetterKind, limit int) ([]StoredDeadLetter, error) {
	s, err := js.Stream(ctx, DeadLetterStream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", DeadLetterStream, err)
	}
	filter := DeadLetterSubject + ".>"
	if kind != "" {
		filter = DeadLetterSubject + "." + string(kind)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, err
	}
	var total uint64
	for _, n := range info.State.Subjects {
		total += n
	}
	if total == 0 {
		return nil, nil
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		return nil, err
	}
	want := int(min(total, uint64(limit)))
	var out []StoredDeadLetter
	for len(out) < want {
		mb, err := c.Fetch(want-len(out), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return out, err
		}
		n := 0
		for m := range mb.Messages() {
			n++
			md, _ := m.Metadata()
			d := StoredDeadLetter{Kind: DeadLetterKind(m.Subject()[len(DeadLetterSubject)+1:]), Header: m.Headers(), Payload: m.Data()}
			if md != nil {
				d.Seq = md.Sequence.Stream
			}
			d.Subject = d.Header.Get(HeaderOriginalSubject)
			d.Reason = d.Header.Get(HeaderReason)
			d.Deliveries = d.Header.Get(HeaderDeliveries)
			d.FailedAt = d.Header.Get(HeaderFailedAt)
			out = append(out, d)
		}
		if n == 0 {
			break
		}
	}
	return out, nil
}

// ReplayDeadLetter publishes a project event dead letter again to its
// original subject and deletes it. Jobs are not replayed: their requester
// got its error reply and is gone.
func ReplayDeadLetter(ctx context.Context, js jetstream.JetStream, d StoredDeadLetter) error {
	if d.Kind != KindProjects {
		return fmt.Errorf("dead letter %d is a %s one; only project events can be replayed (a job's requester is gone)", d.Seq, d.Kind)
	}
	if _, err := ProjectIDFromSubject(d.Subject); err != nil {
		return fmt.Errorf("dead letter %d cannot be replayed: %w", d.Seq, err)
	}
	m := nats.NewMsg(d.Subject)
	m.Data = d.Payload
	m.Header.Set(HeaderOrigin, "replay")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		return publishError(ctx, err)
	}
	s, err := js.Stream(ctx, DeadLetterStream)
	if err != nil {
		return err
	}
	return s.DeleteMsg(ctx, d.Seq)
}

// maxDeliverAdvisory is what JetStream publishes when a message reaches a
// consumer's MaxDeliver without being acked or terminated: its handler died
// or timed out every time. The message then stays in a work-queue stream.
type maxDeliverAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// WatchMaxDeliveries handles messages the jobs' and the project events'
// consumers gave up on without settling them (a worker killed during every
// attempt, say): each is dead-lettered, a job's requester gets an error
// reply at once instead of waiting for its timeout, and the message is
// deleted from its work queue. The api runs it; with several apis, one of
// them (a queue group) handles each advisory.
func WatchMaxDeliveries(nc *nats.Conn, js jetstream.JetStream, now func() time.Time, log *zap.Logger) (*nats.Subscription, error) {
	log = log.Named("deadletter")
	ours := map[string]string{JobsStream: WorkersConsumer, BulkJobsStream: BulkWorkersConsumer, ProjectsStream: ProjectsConsumer}
	sub, err := nc.QueueSubscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.*.*", "embed-api-deadletters", func(m *nats.Msg) {
		var a maxDeliverAdvisory
		if err := json.Unmarshal(m.Data, &a); err != nil || a.StreamSeq == 0 {
			log.Warn("unreadable max-deliveries advisory", zap.ByteString("body", m.Data), zap.Error(err))
			return
		}
		if ours[a.Stream] != a.Consumer {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := giveUp(ctx, nc, js, a, now); err != nil {
			log.Error("could not dead-letter a message out of attempts", zap.String("stream", a.Stream), zap.Uint64("seq", a.StreamSeq), zap.Error(err))
			return
		}
		log.Warn("dead-lettered a message out of attempts", zap.String("stream", a.Stream), zap.Uint64("seq", a.StreamSeq), zap.Uint64("deliveries", a.Deliveries))
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to max-deliveries advisories: %w", err)
	}
	return sub, nil
}

func giveUp(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, a maxDeliverAdvisory, now func() time.Time) error {
	s, err := js.Stream(ctx, a.Stream)
	if err != nil {
		return err
	}
	raw, err := s.GetMsg(ctx, a.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // settled meanwhile (a late ack, or a newer event replaced it)
	}
	if err != nil {
		return err
	}
	reason := fmt.Sprintf("delivered %d times without being settled: the handler crashed or ran past its ack wait every time", a.Deliveries)
	kind := KindProjects
	if a.Stream == JobsStream || a.Stream == BulkJobsStream {
		kind = KindJobs
		if job, err := DecodeJob(raw.Header, raw.Data); err == nil && ValidSubject(job.ReplyTo) {
			_ = nc.PublishMsg(Reply{Err: &ReplyError{Code: StatusUnavailable, Message: reason, Index: -1}}.Msg(job.ReplyTo))
		}
	}
	if err := PublishDeadLetter(ctx, js, DeadLetter{Kind: kind, Subject: raw.Subject, Reason: reason, Deliveries: a.Deliveries, Header: raw.Header, Payload: raw.Data}, now()); err != nil {
		return err
	}
	if err := s.DeleteMsg(ctx, a.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return err
	}
	return nil
}

// ReplayDeadLetters re-publishes dead project events (see
// ReplayDeadLetter) and says how many went; the errors of the others are
// joined.
func ReplayDeadLetters(ctx context.Context, js jetstream.JetStream, dls []StoredDeadLetter) (int, error) {
	var errs []error
	replayed := 0
	for _, d := range dls {
		if err := ReplayDeadLetter(ctx, js, d); err != nil {
			errs = append(errs, err)
			continue
		}
		replayed++
	}
	return replayed, errors.Join(errs...)
}
