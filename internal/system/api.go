// The api: the sync and the HTTP server over the core stages.

package system

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/waywo/embed/embedclient"
	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/dispatch"
	"github.com/waywo/embed/internal/httpapi"
	"github.com/waywo/embed/internal/metrics"
	"github.com/waywo/embed/internal/projectsync"
	"github.com/waywo/embed/internal/search"
	"github.com/waywo/embed/internal/stage"
	"github.com/waywo/embed/internal/wire"
)

// RunAPI serves until ctx ends, the HTTP server fails or the in-process
// worker stops, then stops in order (see the package comment). listening,
// when set, is told the HTTP address once it accepts connections.
func RunAPI(ctx context.Context, cfg config.Config, log *zap.Logger, listening func(addr string)) error {
	log.Info("starting api", cfg.LogFields()...)
	s := newSystem(cfg, log)
	served := make(chan error, 1)
	s.served = served
	if err := s.stages.Up(ctx, s.apiStages()...); err != nil {
		return err
	}
	if listening != nil {
		listening(s.HTTPAddr)
	}
	var runErr error
	select {
	case <-ctx.Done():
	case err := <-served:
		runErr = fmt.Errorf("http server: %w", err)
	case runErr = <-s.fatal:
	case <-s.Worker.Done():
		runErr = fmt.Errorf("in-process worker stopped: %v", s.Worker.Stop())
	}
	log.Info("api stopping: finishing requests in flight", zap.Duration("timeout", cfg.ShutdownTimeout))
	if err := s.Stop(); err != nil && runErr == nil {
		runErr = err
	}
	log.Info("api stopped")
	return runErr
}

// syncOptions are the sync's settings.
func (s *System) syncOptions() projectsync.Options {
	cfg := s.Config
	return projectsync.Options{
		DBPath: cfg.DBPath, Model: cfg.Model, Dims: cfg.Dimensions, MaxTextBytes: cfg.MaxDocumentBytes,
		Batch: cfg.BatchSize, Parallel: cfg.SyncBatches, MaxDeliver: cfg.MaxDeliver, Timeout: cfg.RequestTimeout,
		Reconcile: cfg.ReconcileInterval, Placement: s.Placement,
	}
}

// startSync keeps waywo_projects in sync (EMBED_SYNC): the events stream
// first, then WAYWO_DB, opened in the background while it cannot be.
func (s *System) startSync(ctx context.Context) (func(), error) {
	if !s.Config.Sync {
		return nil, nil
	}
	obs := metrics.NewSync(s.Registry, func() (uint64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return projectsync.ProjectsBacklog(ctx, s.JS)
	})
	r := projectsync.NewRunner(ctx, s.syncOptions(), s.JS, s.Client, s.Workers, s.DeadLetters, obs, s.Log)
	metrics.RegisterSearchIndex(s.Registry, r.IndexStats)
	s.Sync = r
	running := stage.Go(ctx, func(ctx context.Context) error {
		if err := r.Run(ctx); err != nil {
			s.fail(err)
		}
		return nil
	})
	return func() { _ = running.Stop() }, nil
}

// startHTTP serves the API on EMBED_HTTP_ADDR.
func (s *System) startHTTP(context.Context) (func(), error) {
	cfg := s.Config
	limits := httpapi.Limits{MaxDocuments: cfg.MaxDocuments, MaxDocumentBytes: cfg.MaxDocumentBytes, MaxBodyBytes: cfg.MaxBodyBytes}
	if most := httpapi.MaxRequestBytes(limits, cfg.Dimensions); cfg.MaxInflightBytes < most {
		return nil, fmt.Errorf("EMBED_MAX_INFLIGHT_BYTES=%d cannot hold one largest request (%d bytes for EMBED_MAX_BODY_BYTES=%d, EMBED_MAX_DOCUMENTS=%d, EMBED_DIMENSIONS=%d): raise it, or lower those",
			cfg.MaxInflightBytes, most, cfg.MaxBodyBytes, cfg.MaxDocuments, cfg.Dimensions)
	}
	cache, err := httpapi.NewCache(cfg.CacheSize)
	if err != nil {
		return nil, err
	}
	apiMetrics := metrics.NewAPI(s.Registry, func() (int, int) {
		ready, _ := s.Workers.Ready()
		return len(s.Workers.Live()), ready
	}, func(lane wire.Lane) (dispatch.Stats, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return dispatch.ReadStats(ctx, s.JS, lane)
	})
	var routes httpapi.Projects
	if s.Sync != nil {
		routes = projects{s.Sync}
	}
	api := httpapi.New(s.Client, s.Workers, httpapi.Options{
		Model:            cfg.Model,
		Dims:             cfg.Dimensions,
		Fingerprint:      s.Workers.Fingerprint,
		Limits:           limits,
		MaxInflightBytes: cfg.MaxInflightBytes,
		RequestTimeout:   cfg.RequestTimeout,
		Cache:            cache,
		APIKey:           cfg.APIKey,
		Metrics:          apiMetrics,
		MetricsHandler:   promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{}),
		Projects:         routes,
		Broker: func() error {
			if st := s.NC.Status(); st != nats.CONNECTED {
				return fmt.Errorf("waiting for NATS at %s (connection %s)", broker.RedactURL(s.natsURL()), st)
			}
			if err := s.setup.Err(); err != nil {
				return err
			}
			return s.Health.Err()
		},
		Degraded: s.Health.Degraded,
	}, s.Log)
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (EMBED_HTTP_ADDR): %w", cfg.HTTPAddr, err)
	}
	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      cfg.RequestTimeout + time.Minute,
		IdleTimeout:       2 * time.Minute,
	}
	go func() { s.served <- srv.Serve(ln) }()
	s.HTTPAddr = ln.Addr().String()
	s.Log.Info("api listening", zap.String("addr", s.HTTPAddr))
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		// Answers in flight say Connection: close, so that their clients
		// do not send another request on a connection about to close.
		srv.SetKeepAlivesEnabled(false)
		if err := srv.Shutdown(ctx); err != nil {
			s.Log.Warn("http shutdown incomplete", zap.Error(err))
		}
	}, nil
}

// projects is the sync as the HTTP routes see it: a sync that is not
// running is unavailable (503), naming why.
type projects struct{ *projectsync.Runner }

func (p projects) Status(ctx context.Context, page projectsync.Page) (projectsync.Status, error) {
	st, err := p.Runner.Status(ctx, page)
	return st, unavailable(err)
}

func (p projects) Search(ctx context.Context, v []float32, k int, validOnly bool) (embedclient.SearchResponse, error) {
	return answer(p.Runner.Search(ctx, v, k, validOnly))
}

func (p projects) Similar(ctx context.Context, id int64, k int, validOnly bool) (embedclient.SearchResponse, error) {
	return answer(p.Runner.Similar(ctx, id, k, validOnly))
}

// answer is a search's result as the HTTP API writes it, its errors as
// the HTTP API knows them.
func answer(res search.Result, err error) (embedclient.SearchResponse, error) {
	switch {
	case errors.Is(err, search.ErrNotFound):
		return embedclient.SearchResponse{}, fmt.Errorf("%w: %w", httpapi.ErrNotFound, err)
	case errors.Is(err, search.ErrLoading), errors.Is(err, search.ErrUnreadable):
		return embedclient.SearchResponse{}, fmt.Errorf("%w: %w", httpapi.ErrUnavailable, err)
	case err != nil:
		return embedclient.SearchResponse{}, unavailable(err)
	}
	out := embedclient.SearchResponse{Results: make([]embedclient.SearchResult, len(res.Hits)),
		ModelDigest: res.Digest, Searched: res.Searched, Stale: res.Stale, Rescored: res.Rescored}
	for i, h := range res.Hits {
		out.Results[i] = embedclient.SearchResult{ID: h.ID, Score: h.Score, Title: h.Title}
	}
	return out, nil
}

// unavailable makes a sync that is not running a 503.
func unavailable(err error) error {
	if errors.Is(err, projectsync.ErrNotRunning) {
		return fmt.Errorf("%w: %w", httpapi.ErrUnavailable, err)
	}
	return err
}
