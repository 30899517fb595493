package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/ollama"
	"github.com/waywo/embed/internal/queue"
)

// NewConfigured builds the worker cfg describes: one endpoint per
// Ollama host (EMBED_OLLAMA_HOSTS, or OLLAMA_HOST), each checked (and
// pulled with EMBED_PULL) and warmed, concurrently, before the worker takes
// any job. obs may be nil.
func NewConfigured(ctx context.Context, nc *nats.Conn, cfg config.Config, obs Observer, log *zap.Logger) (*Worker, error) {
	if obs == nil {
		obs = ObserverFuncs{}
	}
	js, err := queue.NewJetStream(nc)
	if err != nil {
		return nil, err
	}
	models := make([]Model, len(cfg.OllamaHosts))
	errs := make([]error, len(cfg.OllamaHosts))
	var wg sync.WaitGroup
	for i, u := range cfg.OllamaHosts {
		wg.Go(func() {
			host := u.String()
			model := ollama.NewEndpoint(u, ollama.Options{
				Model:     cfg.Model,
				Dims:      cfg.Dimensions,
				MaxBatch:  cfg.BatchSize,
				Timeout:   cfg.ModelTimeout,
				KeepAlive: cfg.KeepAlive,
				Truncate:  cfg.Truncate,
				OnCall:    func(_ int, took time.Duration, err error) { obs.ModelCall(host, took, err) },
				Log:       log,
			})
			errs[i] = model.Prepare(ctx, cfg.Pull)
			models[i] = model
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return New(nc, js, models, Options{
		ID:                cfg.WorkerID,
		Dims:              cfg.Dimensions,
		QueryTask:         cfg.QueryTask,
		BatchSize:         cfg.BatchSize,
		BatchWait:         cfg.BatchWait,
		CallsPerHost:      cfg.CallsPerHost,
		Consumer:          queue.ConsumerOptions{AckWait: cfg.AckWait, MaxDeliver: cfg.MaxDeliver},
		Limits:            queue.StreamLimits{MaxMsgs: cfg.StreamMaxMsgs, MaxBytes: cfg.StreamMaxBytes},
		Placement:         queue.Placement{Replicas: queue.ResolveReplicas(nc, cfg.StreamReplicas), Tags: cfg.StreamTags},
		HeartbeatInterval: cfg.HeartbeatInterval,
		ShutdownTimeout:   cfg.ShutdownTimeout,
		Observer:          obs,
	}, log), nil
}
