// Package workerproc assembles a worker from its settings: the model
// servers it drives, each checked and warmed, the worker's options (the
// one mapping from the configuration), and the worker process around it —
// NATS, the worker, its /metrics and /health. The api's in-process worker
// and the tests' workers are built by the same code. It is apart from the
// api's assembly (internal/system) so that the worker's static binary
// holds nothing of the sync's SQLite.
package workerproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/httpapi"
	"github.com/waywo/embed/internal/metrics"
	"github.com/waywo/embed/internal/ollama"
	"github.com/waywo/embed/internal/openai"
	"github.com/waywo/embed/internal/stage"
	"github.com/waywo/embed/internal/tracing"
	"github.com/waywo/embed/internal/wire"
	"github.com/waywo/embed/internal/worker"
)

// Options are the settings of a worker.
func Options(cfg config.Config) worker.Options {
	return worker.Options{
		ID:                cfg.WorkerID,
		Dims:              cfg.Dimensions,
		QueryTask:         cfg.QueryTask,
		BatchSize:         cfg.BatchSize,
		BatchTokens:       cfg.BatchTokens,
		BatchWait:         cfg.BatchWait,
		CallsPerHost:      cfg.CallsPerHost,
		HandoverLead:      cfg.HandoverLead,
		Consumer:          wire.ConsumerOptions{AckWait: cfg.AckWait, MaxDeliver: cfg.MaxDeliver},
		HeartbeatInterval: cfg.HeartbeatInterval,
		StallTimeout:      cfg.StallTimeout,
		ShutdownTimeout:   cfg.ShutdownTimeout,
	}
}

// New builds the worker the configuration describes on nc: one endpoint
// per model server — with EMBED_BACKEND=ollama each Ollama host
// (EMBED_OLLAMA_HOSTS, or OLLAMA_HOST), which the worker checks (and
// pulls, with EMBED_PULL) and warms; with openai each engine of
// EMBED_BACKEND_URLS, which it checks — before it takes jobs for it. Its
// metrics go to reg.
func New(nc *nats.Conn, cfg config.Config, reg prometheus.Registerer, log *zap.Logger) (*worker.Worker, error) {
	js, err := broker.NewJetStream(nc)
	if err != nil {
		return nil, err
	}
	obs := metrics.NewWorker(reg)
	opts := Options(cfg)
	opts.Observer = obs
	return worker.New(nc, js, Models(cfg, obs, log), opts, log), nil
}

// Models are the model servers the configuration names, their calls
// counted by obs.
func Models(cfg config.Config, obs *metrics.Worker, log *zap.Logger) []worker.Model {
	onCall := func(host string) func(int, time.Duration, error) {
		return func(_ int, took time.Duration, err error) { obs.ModelCall(host, took, err) }
	}
	var models []worker.Model
	if cfg.Backend == "openai" {
		for _, u := range cfg.BackendURLs {
			models = append(models, openai.NewEndpoint(u, openai.Options{
				Model:    cfg.Model,
				Dims:     cfg.Dimensions,
				APIKey:   cfg.BackendAPIKey,
				MaxBatch: cfg.BatchSize,
				Timeout:  cfg.ModelTimeout,
				OnCall:   onCall(u.String()),
				Log:      log,
			}))
		}
		return models
	}
	for _, u := range cfg.OllamaHosts {
		models = append(models, ollama.NewEndpoint(u, ollama.Options{
			Model:     cfg.Model,
			Dims:      cfg.Dimensions,
			MaxBatch:  cfg.BatchSize,
			Timeout:   cfg.ModelTimeout,
			KeepAlive: cfg.KeepAlive,
			Truncate:  cfg.Truncate,
			Pull:      cfg.Pull,
			OnCall:    onCall(u.String()),
			Log:       log,
		}))
	}
	return models
}

// process is a worker process as its stages build it.
type process struct {
	cfg    config.Config
	log    *zap.Logger
	reg    *prometheus.Registry
	nc     *nats.Conn
	worker *worker.Worker
	run    *stage.Background
}

// Run runs a worker process until ctx ends, then stops it: the worker in
// two phases (see worker.Worker.Run), then its connection, drained.
func Run(ctx context.Context, cfg config.Config, log *zap.Logger) error {
	log.Info("starting worker", cfg.LogFields()...)
	p := &process{cfg: cfg, log: log, reg: metrics.NewRegistry()}
	stages := stage.Stack{Log: log}
	err := stages.Up(ctx,
		stage.Stage{Name: "tracing", Start: p.startTracing},
		stage.Stage{Name: "pprof", Start: p.startPprof},
		stage.Stage{Name: "nats", Start: p.connect},
		stage.Stage{Name: "worker", Start: p.startWorker},
		stage.Stage{Name: "metrics", Start: p.serveMetrics},
	)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-p.run.Done(): // it gave up before being asked to
		err = p.run.Stop()
	}
	stages.Stop()
	return err
}

// startTracing starts tracing as the OTEL_* variables say.
func (p *process) startTracing(ctx context.Context) (func(), error) {
	return tracing.Start(ctx, "waywo-embed-worker", p.log)
}

func (p *process) startPprof(context.Context) (func(), error) {
	return metrics.ServePprof(p.cfg.PprofAddr, p.log)
}

func (p *process) connect(context.Context) (func(), error) {
	if p.cfg.NATSURL == "" {
		return nil, errors.New("NATS_URL is required: a worker joins the queue of an api or a nats-server (the api's embedded one listens on EMBED_NATS_ADDR, default nats://127.0.0.1:4222)")
	}
	nc, err := broker.Connect(broker.Dial{URL: p.cfg.NATSURL, Name: "embed-worker-" + p.cfg.WorkerID, Auth: p.cfg.NATSAuth, Role: wire.RoleWorker, Wait: true, Log: p.log})
	if err != nil {
		return nil, err
	}
	p.nc = nc
	return func() { Drain(nc, p.log) }, nil
}

func (p *process) startWorker(ctx context.Context) (func(), error) {
	w, err := New(p.nc, p.cfg, p.reg, p.log)
	if err != nil {
		return nil, err
	}
	p.worker = w
	p.run = stage.Go(ctx, w.Run)
	return func() { _ = p.run.Stop() }, nil
}

// serveMetrics serves the worker's /metrics and a /health that is 200
// while it can embed (for container healthchecks) on EMBED_METRICS_ADDR,
// when set.
func (p *process) serveMetrics(context.Context) (func(), error) {
	addr := p.cfg.MetricsAddr
	if addr == "" {
		return nil, nil
	}
	h := httpapi.WorkerHandler(promhttp.HandlerFor(p.reg, promhttp.HandlerOpts{}), p.cfg.Model, p.cfg.Dimensions, p.worker.Ready)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (EMBED_METRICS_ADDR): %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	p.log.Info("metrics listening", zap.String("addr", ln.Addr().String()))
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// Drain lets a connection's subscriptions finish what they hold, then
// closes it.
func Drain(nc *nats.Conn, log *zap.Logger) {
	if err := nc.Drain(); err != nil {
		log.Warn("nats drain", zap.Error(err))
	}
	nc.Close()
}
