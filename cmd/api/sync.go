package main

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/metrics"
	"github.com/waywo/embed/internal/projectsync"
	"github.com/waywo/embed/internal/queue"
)

// newSync opens WAYWO_DB and builds the sync service over it and the
// system's queue.
func newSync(ctx context.Context, cfg config.Config, s *system, log *zap.Logger) (*projectsync.Service, error) {
	syncer, err := openSyncer(ctx, cfg, s, log)
	if err != nil {
		return nil, err
	}
	cons, err := queue.EnsureProjects(ctx, s.js, cfg.RequestTimeout+30*time.Second, cfg.MaxDeliver)
	if err != nil {
		return nil, err
	}
	obs := metrics.NewSync(s.reg, func() (uint64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return queue.ProjectsBacklog(ctx, s.js)
	})
	return &projectsync.Service{
		Syncer: syncer, JS: s.js, Reconcile: cfg.ReconcileInterval, Observer: obs, Log: log,
		Consumer: &projectsync.Consumer{
			Syncer: syncer, Consumer: cons, JS: s.js, Ready: s.ready,
			Batch: cfg.BatchSize, Parallel: cfg.SyncBatches, MaxDeliver: cfg.MaxDeliver,
			Timeout: cfg.RequestTimeout, Observer: obs, Log: log.Named("sync"),
		},
	}, nil
}

// openSyncer opens WAYWO_DB and returns the syncer over it.
func openSyncer(ctx context.Context, cfg config.Config, s *system, log *zap.Logger) (*projectsync.Syncer, error) {
	store, err := db.Open(ctx, cfg.DBPath, log)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { _ = store.Close() })
	return &projectsync.Syncer{
		Store: store, Queue: s.client, Model: cfg.Model, Dims: cfg.Dimensions,
		MaxTextBytes: cfg.MaxDocumentBytes, Now: time.Now, Log: log.Named("sync"),
		Fingerprint: s.workers.Fingerprint,
	}, nil
}
