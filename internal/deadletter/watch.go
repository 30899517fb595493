package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/wire"
)

// maxDeliverAdvisory is what JetStream publishes when a message reaches a
// consumer's MaxDeliver without being acked or terminated: its handler died
// or timed out every time. The message then stays in a work-queue stream.
type maxDeliverAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// Watched is a consumer whose given-up messages the watch dead-letters, as
// letters of Kind; KindJobs also answers the job's requester.
type Watched struct {
	Stream, Consumer string
	Kind             Kind
}

// JobsConsumers are the workers' consumers of every lane, watched as
// KindJobs.
func JobsConsumers() []Watched {
	out := make([]Watched, 0, len(wire.Lanes))
	for _, l := range wire.Lanes {
		out = append(out, Watched{Stream: l.Stream(), Consumer: l.Consumer(), Kind: KindJobs})
	}
	return out
}

// WatchMaxDeliveries handles messages the watched consumers gave up on
// without settling them (a worker killed during every attempt, say): each
// is dead-lettered, a job's requester gets an error reply at once instead
// of waiting for its timeout, and the message is deleted from its work
// queue. The api runs it; with several apis, one of them (a queue group)
// handles each advisory.
func WatchMaxDeliveries(nc *nats.Conn, w *Writer, watched []Watched, log *zap.Logger) (*nats.Subscription, error) {
	log = log.Named("deadletter")
	ours := map[string]Watched{}
	for _, c := range watched {
		ours[c.Stream] = c
	}
	sub, err := nc.QueueSubscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.*.*", "embed-api-deadletters", func(m *nats.Msg) {
		var a maxDeliverAdvisory
		if err := json.Unmarshal(m.Data, &a); err != nil || a.StreamSeq == 0 {
			log.Warn("unreadable max-deliveries advisory", zap.ByteString("body", m.Data), zap.Error(err))
			return
		}
		c, ok := ours[a.Stream]
		if !ok || c.Consumer != a.Consumer {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := giveUp(ctx, nc, w, c.Kind, a); err != nil {
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

func giveUp(ctx context.Context, nc *nats.Conn, w *Writer, kind Kind, a maxDeliverAdvisory) error {
	s, err := w.JS.Stream(ctx, a.Stream)
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
	if kind == KindJobs {
		// Told on the gave-up subject: only workers may publish replies.
		if job, err := wire.DecodeJob(raw.Header, raw.Data); err == nil {
			if to, ok := wire.GaveUpSubject(job.ReplyTo); ok {
				_ = nc.PublishMsg(wire.Reply{Err: &wire.ReplyError{Code: wire.StatusUnavailable, Message: reason, Index: -1}}.Msg(to))
			}
		}
	}
	if err := w.Write(ctx, Letter{Kind: kind, Subject: raw.Subject, Reason: reason, Deliveries: a.Deliveries, Header: raw.Header, Payload: raw.Data}); err != nil {
		return err
	}
	if err := s.DeleteMsg(ctx, a.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return err
	}
	return nil
}
