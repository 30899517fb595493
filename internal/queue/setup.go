package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/ollama/ollama/api"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/embed"
)

// Connect opens a NATS connection that reconnects for ever and logs each
// change of state, with the credentials and TLS files of auth. With ns set
// it connects in-process to that server. extra options come last.
func Connect(url, name string, ns *server.Server, auth config.NATSAuth, log *zap.Logger, extra ...nats.Option) (*nats.Conn, error) {
	log = log.Named("nats")
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectBufSize(64 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("reconnected to NATS", zap.String("url", c.ConnectedUrlRedacted())) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("NATS async error", zap.String("subject", subject), zap.Error(err))
		}),
	}
	switch {
	case auth.User != "":
		opts = append(opts, nats.UserInfo(auth.User, auth.Password))
	case auth.Token != "":
		opts = append(opts, nats.Token(auth.Token))
	case auth.Creds != "":
		opts = append(opts, nats.UserCredentials(auth.Creds))
	}
	if auth.TLSCA != "" {
		opts = append(opts, nats.RootCAs(auth.TLSCA))
	}
	if auth.TLSCert != "" {
		opts = append(opts, nats.ClientCert(auth.TLSCert, auth.TLSKey))
	}
	if ns != nil {
		opts = append(opts, nats.InProcessServer(ns))
		url = ns.ClientURL()
	}
	nc, err := nats.Connect(url, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s (NATS_URL): %w", url, err)
	}
	return nc, nil
}

// NewConfiguredWorker builds the worker cfg describes: one endpoint per
// Ollama host (EMBED_OLLAMA_HOSTS, or OLLAMA_HOST), each checked (and
// pulled with EMBED_PULL) and warmed, concurrently, before the worker takes
// any job. obs may be nil.
func NewConfiguredWorker(ctx context.Context, nc *nats.Conn, cfg config.Config, obs Observer, log *zap.Logger) (*Worker, error) {
	if obs == nil {
		obs = ObserverFuncs{}
	}
	js, err := newJetStream(nc)
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
	return NewWorker(nc, js, endpoints, WorkerOptions{
		ID:                cfg.WorkerID,
		Dims:              cfg.Dimensions,
		QueryTask:         cfg.QueryTask,
		BatchSize:         cfg.BatchSize,
		BatchWait:         cfg.BatchWait,
		CallsPerEndpoint:  cfg.HostCalls,
		Consumer:          ConsumerOptions{AckWait: cfg.AckWait, MaxDeliver: cfg.MaxDeliver},
		Limits:            StreamLimits{MaxMsgs: cfg.StreamMaxMsgs, MaxBytes: cfg.StreamMaxBytes},
		HeartbeatInterval: cfg.HeartbeatInterval,
		ShutdownTimeout:   cfg.ShutdownTimeout,
		Observer:          obs,
	}, log), nil
}
