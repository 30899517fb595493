package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/waywo/embed/embedclient"
	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/httpapi"
	"github.com/waywo/embed/internal/metrics"
	"github.com/waywo/embed/internal/projectsync"
	"github.com/waywo/embed/internal/queue"
)

// syncOpenRetry is how often the api tries WAYWO_DB again while it cannot
// open it.
const syncOpenRetry = 10 * time.Second

// syncRunner runs the project sync once WAYWO_DB opens, trying again while
// it does not, and answers the /projects routes meanwhile: a broken
// database must not keep /embed from serving.
type syncRunner struct {
	cfg  config.Config
	sys  *system
	cons jetstream.Consumer // the events stream is NATS's: ready before the file
	obs  *metrics.Sync
	log  *zap.Logger

	mu  sync.Mutex
	svc *projectsync.Service
	err error // why svc is nil
}

// newSyncRunner makes sure the events stream and its consumer exist, so
// that events are stored from the start whatever becomes of the file.
func newSyncRunner(ctx context.Context, cfg config.Config, s *system, log *zap.Logger) (*syncRunner, error) {
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var cons jetstream.Consumer
	err := queue.Retry(setupCtx, "creating the project events stream", log, func(ctx context.Context) (err error) {
		cons, err = queue.EnsureProjects(ctx, s.js, s.placement, cfg.RequestTimeout+30*time.Second, cfg.MaxDeliver)
		return err
	})
	if err != nil {
		return nil, err
	}
	obs := metrics.NewSync(s.reg, func() (uint64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return queue.ProjectsBacklog(ctx, s.js)
	})
	r := &syncRunner{cfg: cfg, sys: s, cons: cons, obs: obs, log: log}
	r.svc, r.err = r.open(ctx) // the usual case is settled before the api listens
	return r, nil
}

// run opens the sync, retrying every syncOpenRetry, then runs it until ctx ends.
func (r *syncRunner) run(ctx context.Context) {
	r.mu.Lock()
	svc, err := r.svc, r.err
	r.mu.Unlock()
	logged := ""
	for {
		if svc == nil && err == nil {
			svc, err = r.open(ctx)
		}
		if err == nil {
			r.mu.Lock()
			r.svc, r.err = svc, nil
			r.mu.Unlock()
			r.log.Info("project sync on", zap.String("db", svc.Syncer.Store.Path()), zap.Duration("reconcile_interval", r.cfg.ReconcileInterval))
			svc.Run(ctx)
			_ = svc.Syncer.Store.Close()
			return
		}
		svc = nil
		r.mu.Lock()
		r.err = err
		r.mu.Unlock()
		if err.Error() != logged {
			logged = err.Error()
			r.log.Error("project sync cannot start; /embed serves meanwhile, events wait in their stream",
				zap.String("db", r.cfg.DBPath), zap.Duration("retry_every", syncOpenRetry), zap.Error(err))
		}
		t := time.NewTimer(syncOpenRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		err = nil
	}
}

func (r *syncRunner) open(ctx context.Context) (*projectsync.Service, error) {
	store, err := db.Open(ctx, r.cfg.DBPath, r.log)
	if err != nil {
		return nil, err
	}
	syncer := newSyncer(r.cfg, r.sys, store, r.log)
	obs := r.obs
	return &projectsync.Service{
		Syncer: syncer, JS: r.sys.js, Reconcile: r.cfg.ReconcileInterval, Observer: obs, Log: r.log,
		Consumer: &projectsync.Consumer{
			Syncer: syncer, Consumer: r.cons, JS: r.sys.js, Ready: r.sys.ready,
			Batch: r.cfg.BatchSize, Parallel: r.cfg.SyncBatches, MaxDeliver: r.cfg.MaxDeliver,
			Timeout: r.cfg.RequestTimeout, Observer: obs, Log: r.log.Named("sync"),
		},
	}, nil
}

func (r *syncRunner) service() (*projectsync.Service, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.svc == nil {
		return nil, fmt.Errorf("%w: the project sync is not running (WAYWO_DB=%s; tried every %s): %v", httpapi.ErrUnavailable, r.cfg.DBPath, syncOpenRetry, r.err)
	}
	return r.svc, nil
}

// Changed queues a sync of project id; the event waits in its stream even
// while the sync cannot run.
func (r *syncRunner) Changed(ctx context.Context, id int64) error {
	return queue.PublishProjectChanged(ctx, r.sys.js, id, "http")
}

// Status is the sync's status, or 503 naming why it is not running.
func (r *syncRunner) Status(ctx context.Context, page embedclient.Page) (embedclient.SyncStatus, error) {
	svc, err := r.service()
	if err != nil {
		return embedclient.SyncStatus{}, err
	}
	return svc.Status(ctx, page)
}

// openSyncer opens WAYWO_DB for a command and returns the syncer over it;
// the file closes with the system.
func openSyncer(ctx context.Context, cfg config.Config, s *system, log *zap.Logger) (*projectsync.Syncer, error) {
	store, err := db.Open(ctx, cfg.DBPath, log)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { _ = store.Close() })
	return newSyncer(cfg, s, store, log), nil
}

func newSyncer(cfg config.Config, s *system, store *db.Store, log *zap.Logger) *projectsync.Syncer {
	return &projectsync.Syncer{
		Store: store, Queue: s.client, Model: cfg.Model, Dims: cfg.Dimensions,
		MaxTextBytes: cfg.MaxDocumentBytes, Now: time.Now, Log: log.Named("sync"),
		Fingerprint: s.workers.Fingerprint,
	}
}
