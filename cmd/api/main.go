// Command api is the HTTP front door of the embedding pipeline. Without
// NATS_URL it also starts an embedded nats-server and an in-process worker,
// so one command runs the whole system next to an Ollama.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/config"

	"github.com/waywo/embed/internal/httpapi"
	"github.com/waywo/embed/internal/metrics"
	"github.com/waywo/embed/internal/queue"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Println("api: the waywo embedding API. Configured by environment:")
		config.Usage(os.Stdout)
		fmt.Println("\nSubcommands:\n  api reindex [--all]   embed every missing or stale project now (--all: every project)")
		fmt.Println("  api deadletters [list|replay] [--kind jobs|projects] [--limit N]")
		fmt.Println("  api healthcheck       exit 0 when this api's /health answers 200 (container HEALTHCHECK)")
		fmt.Println("  api model install [--force] [SOURCE]   put EMBED_MODEL into the Ollama at OLLAMA_HOST ready to serve,")
		fmt.Println("                        from SOURCE or EMBED_MODEL_SOURCE (a GGUF path or an https URL); idempotent")
		fmt.Println("  api model prepare IN.gguf OUT.gguf     write a copy of IN with the metadata Ollama needs to serve it")
		return
	}
	var sub string
	if len(args) > 0 {
		sub, args = args[0], args[1:]
	}
	cfg, err := config.Load(os.LookupEnv)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		fmt.Fprintln(os.Stderr, "run `api --help` for every setting")
		os.Exit(2)
	}
	log, err := cfg.NewLogger()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch sub {
	case "":
		err = run(ctx, cfg, log, nil)
	case "reindex":
		err = reindexCommand(ctx, cfg, log, args, os.Stdout, os.Stderr)
	case "deadletters":
		err = deadLettersCommand(ctx, cfg, log, args, os.Stdout)
	case "model":
		err = modelCommand(ctx, cfg, log, args, os.Stdout, os.Stderr)
	case "healthcheck":
		if err := httpapi.Healthcheck(ctx, cfg.HTTPAddr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	default:
		err = fmt.Errorf("unknown subcommand %q; run `api --help`", sub)
	}
	if err != nil {
		log.Error("api failed", zap.String("command", sub), zap.Error(err))
		_ = log.Sync()
		if sub != "" {
			// A command's user reads its last line: the reason, plainly.
			fmt.Fprintf(os.Stderr, "api %s: %v\n", sub, err)
		}
		os.Exit(1)
	}
	_ = log.Sync()
}

// run serves until ctx ends, then stops in order: HTTP first (requests in
// flight get their replies), then the sync (its batches in flight finish
// and are acked), then the in-process worker (its batch in flight finishes
// and is acked), then NATS. listening, when set, is told the HTTP address
// once it accepts connections.
func run(ctx context.Context, cfg config.Config, log *zap.Logger, listening func(addr string)) error {
	log.Info("starting api", cfg.LogFields()...)
	stopPprof, err := metrics.ServePprof(cfg.PprofAddr, log)
	if err != nil {
		return err
	}
	defer stopPprof()

	sys, err := start(ctx, cfg, log, false)
	if err != nil {
		return err
	}
	defer func() { _ = sys.close(log) }()
	cache, err := httpapi.NewCache(cfg.CacheSize)
	if err != nil {
		return err
	}
	apiMetrics := metrics.NewAPI(sys.reg, func() (int, int) {
		ready, _ := sys.workers.Ready()
		return len(sys.workers.Live()), ready
	}, func(lane queue.Lane) (queue.Stats, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return queue.ReadStats(ctx, sys.js, lane)
	})

	var projects httpapi.Projects
	syncCtx, stopSync := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSync()
	syncDone := make(chan struct{})
	if cfg.Sync {
		runner, err := newSyncRunner(ctx, cfg, sys, log)
		if err != nil {
			return err
		}
		projects = runner
		go func() { defer close(syncDone); runner.run(syncCtx) }()
	} else {
		close(syncDone)
	}

	api := httpapi.New(sys.client, sys.workers, httpapi.Options{
		Model:       cfg.Model,
		Dims:        cfg.Dimensions,
		Fingerprint: sys.workers.Fingerprint,
		Limits: httpapi.Limits{
			MaxDocuments:     cfg.MaxDocuments,
			MaxDocumentBytes: cfg.MaxDocumentBytes,
			MaxBodyBytes:     cfg.MaxBodyBytes,
		},
		RequestTimeout: cfg.RequestTimeout,
		Cache:          cache,
		APIKey:         cfg.APIKey,
		Metrics:        apiMetrics,
		MetricsHandler: promhttp.HandlerFor(sys.reg, promhttp.HandlerOpts{}),
		Projects:       projects,
		Broker: func() error {
			if st := sys.nc.Status(); st != nats.CONNECTED {
				return fmt.Errorf("connection is %s", st)
			}
			return sys.health.Err()
		},
	}, log)
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s (EMBED_HTTP_ADDR): %w", cfg.HTTPAddr, err)
	}
	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      cfg.RequestTimeout + time.Minute,
		IdleTimeout:       2 * time.Minute,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("api listening", zap.String("addr", ln.Addr().String()))
	if listening != nil {
		listening(ln.Addr().String())
	}

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		runErr = fmt.Errorf("http server: %w", err)
	case <-sys.workerDone():
		runErr = fmt.Errorf("in-process worker stopped: %v", sys.worker.stop())
	}

	log.Info("api stopping: finishing requests in flight", zap.Duration("timeout", cfg.ShutdownTimeout))
	shutCtx, cancelShut := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancelShut()
	if err := srv.Shutdown(shutCtx); err != nil {
		log.Warn("http shutdown incomplete", zap.Error(err))
	}
	stopSync()
	<-syncDone
	if err := sys.close(log); err != nil && runErr == nil {
		runErr = err
	}
	log.Info("api stopped")
	return runErr
}
