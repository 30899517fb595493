package projectsync

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/queue"
)

// Service is the sync as the api runs it: the events consumer and the
// periodic reconcile over one Syncer, and what the HTTP routes ask of it.
type Service struct {
	Syncer    *Syncer
	Consumer  *Consumer
	JS        jetstream.JetStream
	Reconcile time.Duration // EMBED_RECONCILE_INTERVAL; 0 reconciles only at start
	Observer  Observer      // may be nil
	Log       *zap.Logger
}

// Run consumes events and reconciles until ctx ends, then returns once the
// syncs in flight have finished and been acked.
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { RunReconciler(ctx, s.Syncer, s.JS, s.Reconcile, s.Observer, s.Log.Named("reconcile")) })
	wg.Go(func() { s.Consumer.Run(ctx) })
	wg.Wait()
}

// Changed queues a sync of project id, as a NATS event does
// (POST /projects/{id}/changed).
func (s *Service) Changed(ctx context.Context, id int64) error {
	return queue.PublishProjectChanged(ctx, s.JS, id, "http")
}

// Status counts projects by state, with the events waiting
// (GET /projects/sync-status).
// The backlog is asked for at most 2 s: with its stream unavailable the
// answer says why instead of hanging.
func (s *Service) Status(ctx context.Context, page Page) (Status, error) {
	st, err := s.Syncer.Status(ctx, page)
	if err != nil {
		return Status{}, err
	}
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if st.Queued, err = queue.ProjectsBacklog(qctx, s.JS); err != nil {
		st.QueueError = fmt.Sprintf("events stream %s: %v", queue.ProjectsStream, err)
	}
	return st, nil
}
