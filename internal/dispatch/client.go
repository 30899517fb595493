package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/tracing"
	"github.com/waywo/embed/internal/vector"
	"github.com/waywo/embed/internal/wire"
)

// Client publishes requests as jobs and waits for the workers' replies on
// the process's own reply subjects, ReplyPrefix.<id>.>, and for an api's
// word that a job was given up, on GaveUpPrefix.<id>.>.
type Client struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	dims int
	id   string // the process's token in its reply subjects
	subs []*nats.Subscription
	log  *zap.Logger
	now  func() time.Time

	// Health, when set, is told each publish's outcome, and a store that
	// cannot write fails requests at once.
	Health *broker.StreamHealth
	// OneLane sends every request to the interactive lane, whatever it
	// asks (EMBED_LANES=false): one first-in-first-out queue.
	OneLane bool

	mu    sync.Mutex
	calls map[string]*call
}

type call struct {
	replies chan *nats.Msg // buffered for one reply per job
}

// CheckPayload fails when a reply of one dims-long vector would not fit
// the server's max payload: nothing could be answered.
func CheckPayload(nc *nats.Conn, dims int) error {
	if dims*4+replyOverhead > int(nc.MaxPayload()) {
		return fmt.Errorf("a %d-dimensional vector does not fit the server's max payload of %d bytes", dims, nc.MaxPayload())
	}
	return nil
}

// NewClient subscribes the process's reply subjects, on a connection that
// may not be up yet (the subscriptions are made once it is). dims is the
// vector length every reply must have.
func NewClient(nc *nats.Conn, js jetstream.JetStream, dims int, now func() time.Time, log *zap.Logger) (*Client, error) {
	c := &Client{
		nc: nc, js: js, dims: dims, now: now,
		id:    nuid.Next(),
		log:   log.Named("queue"),
		calls: map[string]*call{},
	}
	for _, prefix := range []string{wire.ReplyPrefix, wire.GaveUpPrefix} {
		sub, err := nc.Subscribe(prefix+"."+c.id+".>", c.onReply)
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("subscribe %s: %w", prefix, err)
		}
		// Replies are small in count and handled quickly; lift the
		// slow-consumer limits so a burst of 4096-d vectors is not dropped.
		_ = sub.SetPendingLimits(-1, 512<<20)
		c.subs = append(c.subs, sub)
	}
	return c, nil
}

// Close unsubscribes the reply subjects.
func (c *Client) Close() error {
	var errs []error
	for _, s := range c.subs {
		errs = append(errs, s.Unsubscribe())
	}
	return errors.Join(errs...)
}

// Request is one embedding request.
type Request struct {
	ID        string
	InputType string
	Lane      wire.Lane // empty: interactive
	Documents []string
}

// Result holds one vector per document, in input order.
type Result struct {
	Vectors [][]float32
	// Fingerprints[i] is that of the model that computed Vectors[i] (empty
	// from a worker that did not say).
	Fingerprints []vector.Fingerprint
	Tokens       int
	Jobs         int
}

// Embed publishes req as jobs and waits until every job is answered or ctx
// ends. The vectors come back in input order.
func (c *Client) Embed(ctx context.Context, req Request) (_ Result, err error) {
	if req.ID == "" {
		req.ID = nuid.Next()
	}
	if !validToken(req.ID) {
		return Result{}, fmt.Errorf("request id %q: only letters, digits, '-' and '_' can travel in a reply subject", req.ID)
	}
	lane := req.Lane
	if lane == "" || c.OneLane {
		lane = wire.LaneInteractive
	}
	maxDocs := 0
	if lane == wire.LaneBulk {
		maxDocs = wire.BulkJobDocuments
	}
	if c.nc.MaxPayload() == 0 {
		return Result{}, fmt.Errorf("%w: not connected to NATS yet", broker.ErrUnavailable)
	}
	spans, err := Split(req.Documents, c.dims, c.nc.MaxPayload(), maxDocs)
	if err != nil {
		return Result{}, err
	}
	cl := &call{replies: make(chan *nats.Msg, len(spans))}
	c.mu.Lock()
	c.calls[req.ID] = cl
	c.mu.Unlock()
	published, answered := 0, 0
	defer func() {
		c.mu.Lock()
		delete(c.calls, req.ID)
		c.mu.Unlock()
		if answered < published {
			// Nobody will read the rest: spare the model.
			if err := c.nc.Publish(wire.CancelSubject, []byte(req.ID)); err != nil {
				c.log.Debug("cancel not sent", append(tracing.Fields(ctx), zap.String("request_id", req.ID), zap.Error(err))...)
			}
		}
	}()

	if c.Health != nil {
		if err := c.Health.StoreFault(); err != nil {
			return Result{}, fmt.Errorf("%w: %w", broker.ErrUnavailable, err)
		}
	}
	deadline, _ := ctx.Deadline()
	ctx, span := tracing.Tracer().Start(ctx, "embed "+string(lane), trace.WithAttributes(
		attribute.String("embed.request_id", req.ID), attribute.String("embed.lane", string(lane)),
		attribute.Int("embed.documents", len(req.Documents)), attribute.Int("embed.jobs", len(spans))))
	defer func() { endSpan(span, err) }()
	for _, sp := range spans {
		job := wire.Job{
			RequestID: req.ID,
			ReplyTo:   wire.ReplyPrefix + "." + c.id + "." + req.ID + "." + strconv.Itoa(sp[0]),
			Deadline:  deadline,
			InputType: req.InputType,
			Offset:    sp[0],
			Documents: req.Documents[sp[0]:sp[1]],
		}
		if err := c.publish(ctx, lane, job); err != nil {
			return Result{}, err
		}
		published++
	}

	// The wait for the replies, as its own span: the time the jobs spent
	// queued, batched and computed.
	_, wait := tracing.Tracer().Start(ctx, "await replies", trace.WithAttributes(attribute.Int("embed.jobs", len(spans))))
	defer wait.End()
	res := Result{Vectors: make([][]float32, len(req.Documents)), Fingerprints: make([]vector.Fingerprint, len(req.Documents)), Jobs: len(spans)}
	done := make(map[int]bool, len(spans))
	for len(done) < len(spans) {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return Result{}, fmt.Errorf("%w: %d of %d jobs answered", ErrTimeout, len(done), len(spans))
			}
			return Result{}, ctx.Err()
		case m := <-cl.replies:
			off, _ := strconv.Atoi(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:])
			end := spanEnd(spans, off)
			if end < 0 || done[off] {
				continue // a duplicate, from a redelivered job
			}
			r, err := wire.DecodeReply(m.Header, m.Data, end-off, c.dims)
			if err != nil {
				c.log.Error("bad reply", append(tracing.Fields(ctx), zap.String("request_id", req.ID), zap.String("worker", m.Header.Get(wire.HeaderWorker)), zap.Error(err))...)
				return Result{}, fmt.Errorf("%w: %w", broker.ErrUnavailable, err)
			}
			if r.Err != nil {
				if r.Err.Index >= 0 {
					return Result{}, &DocumentError{Index: off + r.Err.Index, Err: &wire.ReplyError{Code: r.Err.Code, Message: r.Err.Message, Index: -1}}
				}
				return Result{}, r.Err
			}
			copy(res.Vectors[off:end], r.Vectors)
			for i := off; i < end; i++ {
				res.Fingerprints[i] = r.Fingerprint
			}
			res.Tokens += r.Tokens
			done[off] = true
			answered++
		}
	}
	return res, nil
}

// publish stores one job, waiting at most PublishTimeout for the stream,
// in a producer span whose context travels with the job (traceparent).
func (c *Client) publish(ctx context.Context, lane wire.Lane, job wire.Job) (err error) {
	ctx, span := tracing.Tracer().Start(ctx, "send "+lane.Subject(), trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		attribute.String("messaging.system", "nats"), attribute.String("messaging.operation.type", "send"),
		attribute.String("messaging.destination.name", lane.Subject()), attribute.Int("embed.offset", job.Offset),
		attribute.Int("embed.documents", len(job.Documents))))
	defer func() { endSpan(span, err) }()
	pctx, cancel := context.WithTimeout(ctx, broker.PublishTimeout)
	defer cancel()
	m := job.Msg(lane.Subject())
	tracing.Inject(ctx, m.Header)
	_, err = c.js.PublishMsg(pctx, m)
	if err != nil {
		err = broker.PublishError(ctx, err, "the jobs stream "+lane.Stream())
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", ErrTimeout, err)
		}
	}
	// A full queue is a stream at work, and a requester's own end says
	// nothing about the stream.
	if c.Health != nil && ctx.Err() == nil && !errors.Is(err, broker.ErrStreamFull) {
		c.Health.Published(err)
	}
	return err
}

// endSpan ends span with err as its status.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

func validToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func spanEnd(spans [][2]int, off int) int {
	for _, sp := range spans {
		if sp[0] == off {
			return sp[1]
		}
	}
	return -1
}

func (c *Client) onReply(m *nats.Msg) {
	// Subject: <prefix>.<client id>.<request id>.<offset>
	_, rest, _ := strings.Cut(m.Subject, "."+c.id+".")
	id, _, ok := strings.Cut(rest, ".")
	if !ok {
		return
	}
	c.mu.Lock()
	cl := c.calls[id]
	c.mu.Unlock()
	if cl == nil {
		c.log.Debug("late or unknown reply dropped", zap.String("request_id", id))
		return
	}
	select {
	case cl.replies <- m:
	default: // more replies than jobs: duplicates, safe to drop
	}
}
