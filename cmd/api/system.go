package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/metrics"
	"github.com/waywo/embed/internal/queue"
	"github.com/waywo/embed/internal/worker"
)

// system is what every mode of the api needs: NATS (embedded or not), the
// jobs stream, the workers' registry, the queue client and, when this
// process runs one, the in-process worker.
type system struct {
	ns      *server.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	workers *queue.Liveness
	client  *queue.Client
	reg     *prometheus.Registry

	placement queue.Placement // of every stream
	health    *queue.StreamHealth

	worker  *background // the in-process worker; nil without one
	closers []func()
	closed  bool
}

// start brings the system up. With no NATS_URL it starts the embedded
// nats-server, unless joinRunning is set and one already answers at
// EMBED_NATS_ADDR (a running api's), which it then uses with its workers.
func start(ctx context.Context, cfg config.Config, log *zap.Logger, joinRunning bool) (_ *system, err error) {
	s := &system{reg: metrics.NewRegistry(), health: queue.NewStreamHealth(log)}
	// The watchers below run until close.
	watchCtx, stopWatching := context.WithCancel(context.WithoutCancel(ctx))
	var watching sync.WaitGroup
	stopWatchers := func() { stopWatching(); watching.Wait() }
	s.closers = append(s.closers, stopWatchers)
	defer func() {
		if err != nil {
			_ = s.close(log)
		}
	}()
	if cfg.OwnNATS() && joinRunning {
		if nc, err := queue.Connect("nats://"+cfg.NATSAddr, "embed-api-"+cfg.WorkerID, nil, cfg.NATSAuth, log, nats.MaxReconnects(0)); err == nil {
			nc.Close()
			log.Info("using the running api's nats-server and workers", zap.String("addr", cfg.NATSAddr))
			cfg.NATSURL = "nats://" + cfg.NATSAddr
			cfg.Worker = "off"
		}
	}
	if cfg.OwnNATS() {
		host, _ := os.Hostname()
		lock, err := queue.LockDataDir(cfg.DataDir, fmt.Sprintf("pid %d on %s, NATS at %s, since %s",
			os.Getpid(), host, cfg.NATSAddr, time.Now().UTC().Format(time.RFC3339)))
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, lock.Release) // released after the server's shutdown (closers run last first)
		guard := queue.NewStoreGuard(cfg.DataDir, s.health, log)
		s.ns, err = queue.StartServer(queue.ServerOptions{
			StoreFault: guard.Fault,
			Addr:       cfg.NATSAddr,
			StoreDir:   cfg.DataDir, // nats-server adds jetstream/
			User:       cfg.NATSAuth.User,
			Password:   cfg.NATSAuth.Password,
			Token:      cfg.NATSAuth.Token,
			Log:        log,
		})
		if err != nil {
			return nil, err
		}
		ns := s.ns
		s.closers = append(s.closers, func() { ns.Shutdown(); ns.WaitForShutdown() })
		watching.Go(func() { guard.Run(watchCtx, ns) })
		s.closers = append(s.closers, stopWatchers) // before the server's shutdown
		log.Info("embedded nats-server listening", zap.String("url", ns.ClientURL()))
	}
	s.nc, err = queue.Connect(cfg.NATSURL, "embed-api", s.ns, cfg.NATSAuth, log)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, s.nc.Close)
	if s.js, err = queue.NewJetStream(s.nc); err != nil {
		return nil, err
	}
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s.placement = queue.Placement{Replicas: queue.ResolveReplicas(s.nc, cfg.StreamReplicas), Tags: cfg.StreamTags}
	err = queue.Retry(setupCtx, "creating the streams", log, func(ctx context.Context) error {
		if err := queue.EnsureJobsStreams(ctx, s.js, queue.StreamLimits{MaxMsgs: cfg.StreamMaxMsgs, MaxBytes: cfg.StreamMaxBytes}, s.placement); err != nil {
			return err
		}
		return queue.EnsureDeadLetters(ctx, s.js, s.placement)
	})
	if err != nil {
		return nil, err
	}
	dlSub, err := queue.WatchMaxDeliveries(s.nc, s.js, time.Now, log)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { _ = dlSub.Unsubscribe() })
	if s.workers, err = queue.WatchWorkers(s.nc, time.Now, log); err != nil {
		return nil, err
	}
	workers := s.workers
	s.closers = append(s.closers, func() { _ = workers.Close() })
	if s.client, err = queue.NewClient(s.nc, s.js, cfg.Dimensions, time.Now, log); err != nil {
		return nil, err
	}
	s.client.Health = s.health
	s.client.OneLane = !cfg.Lanes
	js := s.js
	watching.Go(func() { s.health.Run(watchCtx, js, 2*time.Second) })
	s.closers = append(s.closers, stopWatchers) // before the connection closes
	client := s.client
	s.closers = append(s.closers, func() { _ = client.Close() })

	if cfg.InProcessWorker() {
		// Its own connection, so that its drain at shutdown does not cut
		// the api's.
		wnc, err := queue.Connect(cfg.NATSURL, "embed-worker-"+cfg.WorkerID, s.ns, cfg.NATSAuth, log)
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, wnc.Close)
		w, err := worker.NewConfigured(ctx, wnc, cfg, metrics.NewWorker(s.reg), log)
		if err != nil {
			return nil, err
		}
		s.worker = runInBackground(ctx, func(ctx context.Context) error {
			err := w.Run(ctx)
			_ = wnc.Drain()
			return err
		})
	}
	return s, nil
}

// ready says whether some worker can take jobs now.
func (s *system) ready() bool {
	n, _ := s.workers.Ready()
	return n > 0
}

// waitReady waits until a worker can take jobs, or fails after d.
func (s *system) waitReady(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for !s.ready() {
		if time.Now().After(deadline) {
			_, why := s.workers.Ready()
			return fmt.Errorf("no worker ready after %s: %s", d, why)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// workerDone is closed when the in-process worker stops; nil (never
// ready) without one.
func (s *system) workerDone() <-chan struct{} {
	if s.worker == nil {
		return nil
	}
	return s.worker.done
}

// close is the one teardown: it stops the in-process worker (its batch in
// flight finishes and is acked), drains the api's NATS connection, then
// releases what start made, last first. It returns the worker's error and
// is safe to call again.
func (s *system) close(log *zap.Logger) error {
	var err error
	if s.worker != nil { // stop is idempotent and returns the same error again
		if werr := s.worker.stop(); !errors.Is(werr, context.Canceled) {
			err = werr
		}
	}
	if s.closed {
		return err
	}
	s.closed = true
	if s.nc != nil {
		if derr := s.nc.Drain(); derr != nil {
			log.Warn("nats drain", zap.Error(derr))
		}
	}
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
	return err
}

// background is a goroutine the api owns, with one way to stop it: the
// in-process worker. It runs on a context that ends only when stopped, so
// that the api decides when (after HTTP and the sync have finished).
type background struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	once   sync.Once
}

func runInBackground(ctx context.Context, fn func(context.Context) error) *background {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b := &background{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		b.err = fn(ctx)
	}()
	return b
}

// stop ends it and returns its error; again, it returns the same.
func (b *background) stop() error {
	b.once.Do(b.cancel)
	<-b.done
	return b.err
}
