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
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/queue"
)

// Consumer turns project-changed events into syncs.
type Consumer struct {
	Syncer   *Syncer
	Consumer jetstream.Consumer
	JS       jetstream.JetStream
	// Ready says a worker can take jobs now. While none can, events stay
	// in the stream rather than burn their attempts.
	Ready      func() bool
	Batch      int           // events per sync
	Parallel   int           // syncs in flight
	MaxDeliver int           // the consumer's MaxDeliver
	Timeout    time.Duration // one sync's deadline
	Observer   Observer      // may be nil
	Log        *zap.Logger
}

// Observer is told what the sync does; metrics.Sync is one.
type Observer interface {
	Synced(outcome string, n int)
	DeadLettered()
	Reconciled(queued int, err error)
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
	for ctx.Err() == nil {
		if !c.Ready() {
			sleep(ctx, 250*time.Millisecond)
			continue
		}
		msgs := c.fetch(ctx)
		if len(msgs) == 0 {
			continue
		}
		c.handle(msgs)
	}
}

// fetch blocks for one event, then takes what else is there now.
func (c *Consumer) fetch(ctx context.Context) []jetstream.Msg {
	mb, err := c.Consumer.Fetch(1, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		c.Log.Warn("fetch project events", zap.Error(err))
		sleep(ctx, time.Second)
		return nil
	}
	var msgs []jetstream.Msg
	for m := range mb.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) == 0 || c.Batch <= 1 {
		return msgs
	}
	mb, err = c.Consumer.FetchNoWait(c.Batch - 1)
	if err != nil {
		return msgs
	}
	for m := range mb.Messages() {
		msgs = append(msgs, m)
	}
	return msgs
}

func (c *Consumer) handle(msgs []jetstream.Msg) {
	// A sync in flight finishes even when the api is stopping.
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	byID := make(map[int64][]jetstream.Msg, len(msgs))
	var ids []int64
	for _, m := range msgs {
		id, err := queue.ProjectIDFromSubject(m.Subject())
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
	c.Log.Info("synced projects", zap.Int("events", len(msgs)), zap.Int("projects", len(ids)),
		zap.Int("embedded", counts[Embedded]), zap.Int("unchanged", counts[Unchanged]), zap.Int("missing", counts[Missing]),
		zap.Int("failed", counts[Failed]), zap.Int("retry", counts[Retry]), zap.Duration("took", time.Since(start)))
}

func (c *Consumer) settle(ctx context.Context, m jetstream.Msg, id int64, r Result) {
	log := c.Log.With(zap.Int64("project_id", id), zap.String("origin", m.Headers().Get(queue.HeaderOrigin)))
	switch r.Outcome {
	case Embedded, Unchanged:
		_ = m.Ack()
	case Missing:
		log.Info("project no longer exists; nothing to sync")
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
			if err := c.Syncer.Store.SaveFailures(ctx, []db.Failure{{ID: id, Reason: reason}}, c.Syncer.Now()); err != nil {
				log.Error("could not record the failure", zap.Error(err))
			}
			c.deadLetter(ctx, m, id, reason)
			_ = m.Term()
			return
		}
		delay := retryDelay(delivered)
		log.Warn("project sync failed; retrying", zap.String("reason", r.Reason), zap.Uint64("attempt", delivered), zap.Duration("delay", delay))
		_ = m.NakWithDelay(delay)
	}
}

func (c *Consumer) deadLetter(ctx context.Context, m jetstream.Msg, id int64, reason string) {
	var delivered uint64
	if md, err := m.Metadata(); err == nil {
		delivered = md.NumDelivered
	}
	h := nats.Header{}
	for k, v := range m.Headers() {
		h[k] = v
	}
	if id > 0 {
		h.Set(queue.HeaderProjectID, strconv.FormatInt(id, 10))
	}
	if c.Observer != nil {
		c.Observer.DeadLettered()
	}
	err := queue.PublishDeadLetter(ctx, c.JS, queue.DeadLetter{
		Kind: queue.KindProjects, Subject: m.Subject(), Reason: reason, Deliveries: delivered, Header: h, Payload: m.Data(),
	}, c.Syncer.Now())
	if err != nil {
		c.Log.Error("could not store dead letter", zap.String("subject", m.Subject()), zap.String("reason", reason), zap.Error(err))
	}
}

// retryDelay backs off 1 s, 5 s, 15 s, then 30 s.
func retryDelay(delivered uint64) time.Duration {
	switch delivered {
	case 0, 1:
		return time.Second
	case 2:
		return 5 * time.Second
	case 3:
		return 15 * time.Second
	}
	return 30 * time.Second
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
// every project) as a project event, and forgets the state of deleted
// projects. It returns how many it queued and the model changes it found
// (see ModelChange).
func Reconcile(ctx context.Context, s *Syncer, js jetstream.JetStream, all bool) (int, []ModelChange, error) {
	if _, err := s.Store.ForgetDeleted(ctx); err != nil {
		return 0, nil, err
	}
	ids, changes, err := s.targets(ctx, all)
	if err != nil {
		return 0, nil, err
	}
	if err := queue.PublishProjectsChanged(ctx, js, ids, "reconcile"); err != nil {
		return 0, nil, err
	}
	return len(ids), changes, nil
}

// RunReconciler reconciles now and then every interval (never again when
// interval is 0) until ctx ends. A failed round is logged and retried at
// the next tick. obs may be nil.
//
// A change of model (the workers serve a new digest) is logged once per
// old and new digest, with how many projects it sends back to the model.
func RunReconciler(ctx context.Context, s *Syncer, js jetstream.JetStream, interval time.Duration, obs Observer, log *zap.Logger) {
	announced := map[[2]string]bool{}
	for {
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
		if interval <= 0 {
			return
		}
		sleep(ctx, interval)
		if ctx.Err() != nil {
			return
		}
	}
}
