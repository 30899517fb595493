package deadletter

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/waywo/embed/internal/wire"
)

// Stored is a dead letter as read back from the stream.
type Stored struct {
	Seq        uint64
	Kind       Kind
	Subject    string
	Reason     string
	Deliveries string
	FailedAt   string
	Header     nats.Header
	Payload    []byte
}

// List reads up to limit dead letters of kind ("" for all),
// oldest first.
func List(ctx context.Context, js jetstream.JetStream, kind Kind, limit int) ([]Stored, error) {
	s, err := js.Stream(ctx, wire.DeadLetterStream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", wire.DeadLetterStream, err)
	}
	filter := wire.DeadLetterSubject + ".>"
	if kind != "" {
		filter = wire.DeadLetterSubject + "." + string(kind)
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
	var out []Stored
	for len(out) < want {
		mb, err := c.Fetch(want-len(out), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return out, err
		}
		n := 0
		for m := range mb.Messages() {
			n++
			md, _ := m.Metadata()
			d := Stored{Kind: Kind(m.Subject()[len(wire.DeadLetterSubject)+1:]), Header: m.Headers(), Payload: m.Data()}
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

// Delete removes the dead letter seq, once replayed.
func Delete(ctx context.Context, js jetstream.JetStream, seq uint64) error {
	s, err := js.Stream(ctx, wire.DeadLetterStream)
	if err != nil {
		return err
	}
	return s.DeleteMsg(ctx, seq)
}
