package projectsync

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/backoff"
	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/deadletter"
	"github.com/waywo/embed/internal/tracing"
	"github.com/waywo/embed/internal/wire"
)

// Consumer turns project-changed events into syncs.
type Consumer struct {
	Syncer   *Syncer
	Consumer jetstream.Consumer
	// DeadLetters records events that fail for good or run out of attempts.
	DeadLetters *deadletter.Writer
	// Ready says a worker can take jobs now. While none can, events stay
	// in the stream rather than burn their attempts.
	Ready      func() bool
	Batch      int           // events per sync
	Parallel   int           // syncs in flight
	MaxDeliver int           // the consumer's MaxDeliver
	Timeout    time.Duration // one sync's deadline
	Observer   Observer      // may be nil
	Log        *zap.Logger

	summary summary
}

// Observer is told what the sync does; metrics.Sync is one.
type Observer interface {
	Synced(outcome string, n int)
	DeadLettered()
	Reconciled(queued int, err error)
	// FetchFailed counts a failed fetch of events (the stream unavailable).
	FetchFailed()
}

// Run consumes until ctx ends; the syncs in flight then finish (within
// Timeout) and are acked.
func (c *Consumer) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := 0; i < c.Parallel; i++ {
		wg.Go(func() { c.loop(ctx) })
	}
	wg.Wait()
}

func (c *Consumer) loop(ctx context.Context) {
	outage := &broker.Outage{What: "fetching project events", Log: c.Log}
	if c.Observer != nil {
		outage.Counted = c.Observer.FetchFailed
	}
	for ctx.Err() == nil {
		if !c.Ready() {
			sleep(ctx, 250*time.Millisecond)
			continue
		}
		msgs, err := c.fetch()
		if err != nil {
			outage.Failed(ctx, err)
			continue
		}
		outage.OK()
		if len(msgs) == 0 {
			continue
		}
		c.handle(msgs)
	}
	c.summary.flush() // what the last interval did, before the api stops
}

// fetch blocks for one event, then takes what else is there now. err is a
// failure to fetch (the stream unavailable), not an empty stream.
func (c *Consumer) fetch() ([]jetstream.Msg, error) {
	mb, err := c.Consumer.Fetch(1, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for m := range mb.Messages() {
		msgs = append(msgs, m)
	}
	if err := mb.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && len(msgs) == 0 {
		return nil, err
	}
	if len(msgs) == 0 || c.Batch <= 1 {
		return msgs, nil
	}
	mb, err = c.Consumer.FetchNoWait(c.Batch - 1)
	if err != nil {
		return msgs, nil
	}
	for m := range mb.Messages() {
		msgs = append(msgs, m)
	}
	return msgs, nil
}

func (c *Consumer) handle(msgs []jetstream.Msg) {
	// A sync in flight finishes even when the api is stopping.
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	byID := make(map[int64][]jetstream.Msg, len(msgs))
	var ids []int64
	for _, m := range msgs {
		id, err := wire.ProjectIDFromSubject(m.Subject())
		if err != nil {
			c.Log.Warn("bad project event; dead-lettered", zap.String("subject", m.Subject()), zap.Int("bytes", len(m.Data())), zap.Error(err))
			c.deadLetter(ctx, m, 0, "bad event: "+err.Error())
			_ = m.Term()
			continue
		}
		if _, seen := byID[id]; !seen {
			ids = append(ids, id)
		}
		byID[id] = append(byID[id], m)
	}
	if len(ids) == 0 {
		return
	}
	// The sync of a batch of events, linked to whoever announced each
	// (the backend's or an HTTP request's trace, when it sent one).
	var links []trace.Link
	for _, m := range msgs {
		if sc := trace.SpanContextFromContext(tracing.Extract(context.Background(), m.Headers())); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{attribute.String("messaging.destination.name", m.Subject())}})
		}
	}
	ctx, span := tracing.Tracer().Start(ctx, "sync projects", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(links...),
		trace.WithAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.operation.type", "process"),
			attribute.Int("messaging.batch.message_count", len(msgs)), attribute.Int("embed.projects", len(ids))))
	defer span.End()
	start := time.Now()
	results := c.Syncer.Sync(ctx, ids, false)
	counts := map[Outcome]int{}
	for _, id := range ids {
		r := results[id]
		counts[r.Outcome]++
		for i, m := range byID[id] {
			if i > 0 && r.Outcome == Failed {
				// Events for one project that met in a batch share its
				// sync: one failure, one dead letter.
				r.Recorded = true
			}
			c.settle(ctx, m, id, r)
		}
	}
	if c.Observer != nil {
		for o, n := range counts {
			c.Observer.Synced(o.String(), n)
		}
	}
	for o, n := range counts {
		span.SetAttributes(attribute.Int("embed.sync."+o.String(), n))
	}
	took := time.Since(start)
	c.Log.Debug("synced projects", zap.Int("events", len(msgs)), zap.Int("projects", len(ids)),
		zap.Int("embedded", counts[Embedded]), zap.Int("unchanged", counts[Unchanged]), zap.Int("missing", counts[Missing]), zap.Int("superseded", counts[Superseded]),
		zap.Int("failed", counts[Failed]), zap.Int("retry", counts[Retry]), zap.Duration("took", took))
	c.summary.add(len(msgs), len(ids), counts, took, c.Log)
}

// SummaryEvery is how often the sync logs what it did at info level: a
// storm of events makes one line per interval, not one per batch.
const SummaryEvery = 10 * time.Second

// summary adds up the batches synced since it last logged. A batch after
// a quiet SummaryEvery is logged at once; those that follow within it are
// logged together when it ends.
type summary struct {
	mu              sync.Mutex
	logged          time.Time   // when the last line was written
	timer           *time.Timer // pending line, nil when none
	batches, events int
	projects        int
	counts          map[Outcome]int
	slowest         time.Duration
	log             *zap.Logger
}

func (s *summary) add(events, projects int, counts map[Outcome]int, took time.Duration, log *zap.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.counts == nil {
		s.counts = map[Outcome]int{}
	}
	s.log = log
	s.batches++
	s.events += events
	s.projects += projects
	for o, n := range counts {
		s.counts[o] += n
	}
	s.slowest = max(s.slowest, took)
	switch wait := SummaryEvery - time.Since(s.logged); {
	case s.timer != nil: // a line is due already
	case wait <= 0:
		s.flushLocked()
	default:
		s.timer = time.AfterFunc(wait, s.flush)
	}
}

func (s *summary) flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushLocked()
}

func (s *summary) flushLocked() {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if s.batches == 0 {
		return
	}
	s.log.Info("synced projects", zap.Int("batches", s.batches), zap.Int("events", s.events), zap.Int("projects", s.projects),
		zap.Int("embedded", s.counts[Embedded]), zap.Int("unchanged", s.counts[Unchanged]), zap.Int("missing", s.counts[Missing]), zap.Int("superseded", s.counts[Superseded]),
		zap.Int("failed", s.counts[Failed]), zap.Int("retry", s.counts[Retry]), zap.Duration("slowest_batch", s.slowest))
	s.logged = time.Now()
	s.batches, s.events, s.projects, s.slowest = 0, 0, 0, 0
	clear(s.counts)
}

func (c *Consumer) settle(ctx context.Context, m jetstream.Msg, id int64, r Result) {
	log := c.Log.With(zap.Int64("project_id", id), zap.String("origin", m.Headers().Get(HeaderOrigin)))
	switch r.Outcome {
	case Embedded, Unchanged:
		_ = m.Ack()
	case Missing:
		log.Info("project no longer exists; nothing to sync")
		_ = m.Ack()
	case Superseded:
		log.Debug("project changed while its vector was computed; the newer text's sync or the reconcile takes over")
		_ = m.Ack()
	case Failed:
		if !r.Recorded {
			log.Warn("project cannot be embedded; dead-lettered", zap.String("reason", r.Reason))
			c.deadLetter(ctx, m, id, r.Reason)
		}
		_ = m.Ack()
	case Retry:
		md, err := m.Metadata()
		delivered := uint64(1)
		if err == nil {
			delivered = md.NumDelivered
		}
		if int(delivered) >= c.MaxDeliver {
			reason := "gave up after " + strconv.FormatUint(delivered, 10) + " attempts: " + r.Reason
			log.Error("project sync failed; dead-lettered (the reconcile will try again)", zap.String("reason", reason))
			if _, err := c.Syncer.Store.SaveFailures(ctx, []db.Failure{{ID: id, Reason: reason}}, c.Syncer.Now()); err != nil {
				log.Error("could not record the failure", zap.Error(err))
			}
			c.deadLetter(ctx, m, id, reason)
			_ = m.Term()
			return
		}
		delay := retryDelay.Delay(int(delivered))
		log.Warn("project sync failed; retrying", zap.String("reason", r.Reason), zap.Uint64("attempt", delivered), zap.Duration("delay", delay))
		_ = m.NakWithDelay(delay)
	}
}

func (c *Consumer) deadLetter(ctx context.Context, m jetstream.Msg, id int64, reason string) {
	var extra nats.Header
	if id > 0 {
		extra = nats.Header{HeaderProjectID: []string{strconv.FormatInt(id, 10)}}
	}
	if c.Observer != nil {
		c.Observer.DeadLettered()
	}
	_ = c.DeadLetters.Msg(ctx, deadletter.KindProjects, m, reason, extra)
}

// retryDelay paces the attempts of an event whose sync failed for a
// passing reason: 1 s, doubling, at most 30 s.
var retryDelay = backoff.Policy{First: time.Second, Max: 30 * time.Second}

// wait waits for the next reconcile: interval (none when 0), or another
// file set up at the path. It says false when ctx ended.
func wait(ctx context.Context, interval time.Duration, replaced <-chan struct{}, log *zap.Logger) bool {
	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTimer(interval)
		defer t.Stop()
		tick = t.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-tick:
	case <-replaced:
		log.Info("another WAYWO_DB file is set up; reconciling it now")
	}
	return true
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Reconcile queues every project whose vector is missing or stale (all:
// every project) as a project event, forgets the state of deleted
// projects, and brings the search index, when there is one, in line with
// the file (its first load, at start). It returns how many it queued and the model changes it found
// (see ModelChange).
func Reconcile(ctx context.Context, s *Syncer, js jetstream.JetStream, all bool) (int, []ModelChange, error) {
	n, changes, err := reconcile(ctx, s, js, all)
	if s.Index != nil && ctx.Err() == nil {
		if _, ierr := s.Index.Refresh(ctx, s.Store, s.Log); ierr != nil {
			err = errors.Join(err, ierr)
		}
	}
	return n, changes, err
}

func reconcile(ctx context.Context, s *Syncer, js jetstream.JetStream, all bool) (int, []ModelChange, error) {
	if _, err := s.Store.ForgetDeleted(ctx); err != nil {
		return 0, nil, err
	}
	ids, changes, err := s.targets(ctx, all)
	if err != nil {
		return 0, nil, err
	}
	if err := PublishProjectsChanged(ctx, js, ids, "reconcile"); err != nil {
		return 0, nil, err
	}
	return len(ids), changes, nil
}

// RunReconciler reconciles now, then every interval (never again when
// interval is 0) and whenever another file is set up at WAYWO_DB's path
// (as at start: its rows are all checked), until ctx ends. A failed round
// is logged and retried at the next tick. obs may be nil.
//
// A change of model (the workers serve a new digest) is logged once per
// old and new digest, with how many projects it sends back to the model.
func RunReconciler(ctx context.Context, s *Syncer, js jetstream.JetStream, interval time.Duration, obs Observer, log *zap.Logger) {
	announced := map[[2]string]bool{}
	for {
		replaced := s.Store.Replaced() // a replacement during the round calls for another
		start := time.Now()
		n, changes, err := Reconcile(ctx, s, js, false)
		for _, c := range changes {
			if key := [2]string{c.From, c.To.Digest}; !announced[key] {
				announced[key] = true
				log.Warn(fmt.Sprintf("model changed from %s to %s: %d projects to re-embed", shortDigest(c.From), c.To.ShortDigest(), c.Projects),
					zap.String("from", c.From), zap.String("to", c.To.Digest), zap.String("ollama_version", c.To.OllamaVersion), zap.Int("projects", c.Projects))
			}
		}
		if obs != nil && !errors.Is(err, context.Canceled) {
			obs.Reconciled(n, err)
		}
		switch {
		case errors.Is(err, context.Canceled):
			return
		case err != nil:
			log.Error("reconcile failed", zap.Error(err))
		default:
			log.Info("reconciled", zap.Int("queued", n), zap.Duration("took", time.Since(start)))
		}
		if !wait(ctx, interval, replaced, log) {
			return
		}
	}
}
