// Command worker pulls embedding jobs from NATS JetStream, runs them through
// Ollama in batches and replies. It is stateless: run one per GPU or Ollama
// runner, on any host that reaches NATS.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/httpapi"
	"github.com/waywo/embed/internal/metrics"
	"github.com/waywo/embed/internal/queue"
	"github.com/waywo/embed/internal/worker"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help") {
		fmt.Println("worker: a waywo embedding worker. Configured by environment:")
		config.Usage(os.Stdout)
		fmt.Println("\nSubcommands:\n  worker healthcheck    exit 0 when this worker's /health (EMBED_METRICS_ADDR) answers 200")
		return
	}
	cfg, err := config.Load(os.LookupEnv)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		fmt.Fprintln(os.Stderr, "run `worker --help` for every setting")
		os.Exit(2)
	}
	log, err := cfg.NewLogger()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		if cfg.MetricsAddr == "" {
			fmt.Fprintln(os.Stderr, "EMBED_METRICS_ADDR is empty: this worker serves no /health")
			os.Exit(1)
		}
		if err := httpapi.Healthcheck(ctx, cfg.MetricsAddr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, cfg, log); err != nil {
		log.Error("worker failed", zap.Error(err))
		_ = log.Sync()
		os.Exit(1)
	}
	_ = log.Sync()
}

func run(ctx context.Context, cfg config.Config, log *zap.Logger) error {
	if cfg.NATSURL == "" {
		return errors.New("NATS_URL is required: a worker joins the queue of an api or a nats-server (the api's embedded one listens on EMBED_NATS_ADDR, default nats://127.0.0.1:4222)")
	}
	log.Info("starting worker", cfg.LogFields()...)
	stopPprof, err := metrics.ServePprof(cfg.PprofAddr, log)
	if err != nil {
		return err
	}
	defer stopPprof()
	nc, err := queue.Connect(cfg.NATSURL, "embed-worker-"+cfg.WorkerID, nil, cfg.NATSAuth, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg := metrics.NewRegistry()
	w, err := worker.NewConfigured(ctx, nc, cfg, metrics.NewWorker(reg), log)
	if err != nil {
		return err
	}
	if cfg.MetricsAddr != "" {
		stop, err := serveMetrics(cfg.MetricsAddr, reg, w, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	err = w.Run(ctx)
	if derr := nc.Drain(); derr != nil {
		log.Warn("nats drain", zap.Error(derr))
	}
	return err
}

// serveMetrics serves /metrics and a /health that is 200 while the worker
// can embed (for container healthchecks).
func serveMetrics(addr string, reg *prometheus.Registry, w *worker.Worker, log *zap.Logger) (stop func(), err error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /health", func(rw http.ResponseWriter, _ *http.Request) {
		ready, reason := w.Ready()
		status, body := http.StatusOK, map[string]any{"status": "healthy", "model_loaded": true}
		if !ready {
			status, body = http.StatusServiceUnavailable, map[string]any{"status": "unhealthy", "model_loaded": false, "reason": reason}
		}
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(status)
		_ = json.NewEncoder(rw).Encode(body)
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (EMBED_METRICS_ADDR): %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("metrics listening", zap.String("addr", ln.Addr().String()))
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
