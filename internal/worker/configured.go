package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ollama/ollama/api"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/embed"
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
	endpoints := make([]Endpoint, len(cfg.OllamaHosts))
	errs := make([]error, len(cfg.OllamaHosts))
	var wg sync.WaitGroup
	for i, u := range cfg.OllamaHosts {
		wg.Go(func() {
			host := u.String()
			hc := embed.NewHTTPClient()
			client := api.NewClient(u, hc)
			model := embed.NewModel(embed.NewOllamaEmbedder(u, hc), host, embed.ModelOptions{
				Name:      cfg.Model,
				Dims:      cfg.Dimensions,
				MaxBatch:  cfg.BatchSize,
				Timeout:   cfg.ModelTimeout,
				KeepAlive: cfg.KeepAlive,
				Truncate:  cfg.Truncate,
				OnCall:    func(_ int, took time.Duration, err error) { obs.ModelCall(host, took, err) },
			})
			errs[i] = embed.Prepare(ctx, client, model, cfg.Pull, log)
			endpoints[i] = Endpoint{Model: model, Probe: func(ctx context.Context, full bool) error {
				before, err := embed.Probe(ctx, client, model, full)
				if after := model.Fingerprint(); err == nil && before.Digest != "" && after.Digest != before.Digest {
					log.Warn("model changed in Ollama: vectors from now on are of the new model", zap.String("model", cfg.Model),
						zap.String("ollama", host), zap.String("from", before.ShortDigest()), zap.String("to", after.ShortDigest()))
				}
				return err
			}}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return New(nc, js, endpoints, Options{
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
