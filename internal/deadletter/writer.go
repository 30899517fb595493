package deadletter

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/wire"
)

// Letter is one failure to record.
type Letter struct {
	Kind       Kind
	Subject    string // where the work was published
	Reason     string
	Deliveries uint64
	Header     nats.Header // the original headers, kept
	Payload    []byte
}

// Writer is the one writer of dead letters: the worker's failed jobs, the
// sync's failed project events and the watch's messages out of attempts
// all go through it.
type Writer struct {
	JS  jetstream.JetStream
	Now func() time.Time // default time.Now
	Log *zap.Logger
}

// Write stores l and waits for the stream's acknowledgement, at most
// broker.PublishTimeout: the fate of the work does not depend on its dead
// letter. A failure is logged and returned.
func (w *Writer) Write(ctx context.Context, l Letter) error {
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	m := nats.NewMsg(wire.DeadLetterSubject + "." + string(l.Kind))
	for k, vs := range l.Header {
		if k == nats.MsgIdHdr { // would dedupe two failures of one job
			continue
		}
		m.Header[k] = vs
	}
	m.Header.Set(HeaderReason, l.Reason)
	m.Header.Set(HeaderOriginalSubject, l.Subject)
	m.Header.Set(HeaderDeliveries, strconv.FormatUint(l.Deliveries, 10))
	m.Header.Set(HeaderFailedAt, now().UTC().Format(time.RFC3339Nano))
	m.Data = l.Payload
	ctx, cancel := context.WithTimeout(ctx, broker.PublishTimeout)
	defer cancel()
	if _, err := w.JS.PublishMsg(ctx, m); err != nil {
		err = fmt.Errorf("dead letter: %w", broker.PublishError(ctx, err, wire.DeadLetterStream))
		w.Log.Error("could not store dead letter", zap.String("kind", string(l.Kind)), zap.String("subject", l.Subject),
			zap.String("reason", l.Reason), zap.Error(err))
		return err
	}
	return nil
}

// Msg dead-letters a message fetched from a consumer, with its headers
// (and extra ones, such as the project an event is about), payload and
// delivery count.
func (w *Writer) Msg(ctx context.Context, kind Kind, m jetstream.Msg, reason string, extra nats.Header) error {
	var delivered uint64
	if md, err := m.Metadata(); err == nil {
		delivered = md.NumDelivered
	}
	h := nats.Header{}
	for k, v := range m.Headers() {
		h[k] = v
	}
	for k, v := range extra {
		h[k] = v
	}
	return w.Write(ctx, Letter{Kind: kind, Subject: m.Subject(), Reason: reason, Deliveries: delivered, Header: h, Payload: m.Data()})
}
