// Command api is the HTTP front door of the embedding pipeline. Without
// NATS_URL it also starts an embedded nats-server and an in-process worker,
// so one command runs the whole system next to an Ollama.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/embed"
	"github.com/waywo/embed/internal/httpapi"
	"github.com/waywo/embed/internal/metrics"
	"github.com/waywo/embed/internal/queue"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help") {
		fmt.Println("api: the waywo embedding API. Configured by environment:")
		config.Usage(os.Stdout)
		return
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
	if err := run(ctx, cfg, log, nil); err != nil {
		log.Error("api failed", zap.Error(err))
		_ = log.Sync()
		os.Exit(1)
	}
	_ = log.Sync()
}

// run serves until ctx ends, then stops in order: HTTP first (requests in
// flight get their replies), then the in-process worker (its batch in flight
// finishes and is acked), then NATS. listening, when set, is told the HTTP
// address once it accepts connections.
func run(ctx context.Context, cfg config.Config, log *zap.Logger, listening func(addr string)) error {
	log.Info("starting api", cfg.LogFields()...)
	stopPprof, err := cfg.ServePprof(log)
	if err != nil {
		return err
	}
	defer stopPprof()

	var ns *server.Server
	if cfg.Embedded() {
		var err error
		ns, err = queue.StartEmbedded(queue.EmbeddedOptions{
			Addr:     cfg.NATSAddr,
			StoreDir: cfg.DataDir, // nats-server adds jetstream/
			User:     cfg.NATSAuth.User,
			Password: cfg.NATSAuth.Password,
			Token:    cfg.NATSAuth.Token,
			Log:      log,
		})
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		}()
		log.Info("embedded nats-server listening", zap.String("url", ns.ClientURL()))
	}
	nc, err := queue.Connect(cfg.NATSURL, "embed-api", ns, cfg.NATSAuth, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := queue.EnsureJobsStream(setupCtx, js, queue.StreamLimits{MaxMsgs: cfg.StreamMaxMsgs, MaxBytes: cfg.StreamMaxBytes}); err != nil {
		return err
	}
	workers, err := queue.WatchWorkers(nc, time.Now, log)
	if err != nil {
		return err
	}
	defer workers.Close()
	client, err := queue.NewClient(nc, js, cfg.Dimensions, time.Now, log)
	if err != nil {
		return err
	}
	defer client.Close()
	cache, err := embed.NewCache(cfg.CacheSize)
	if err != nil {
		return err
	}
	reg := metrics.NewRegistry()
	apiMetrics := metrics.NewAPI(reg, func() (int, int) {
		ready, _ := workers.Ready()
		return len(workers.Live()), ready
	}, func() (queue.Stats, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return queue.ReadStats(ctx, js)
	})

	// The in-process worker has its own connection so that its drain at
	// shutdown does not cut the api's.
	workerCtx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorker()
	var workerDone chan error // stays nil, never ready, without an in-process worker
	if cfg.InProcessWorker() {
		workerDone = make(chan error, 1)
		wnc, err := queue.Connect(cfg.NATSURL, "embed-worker-"+cfg.WorkerID, ns, cfg.NATSAuth, log)
		if err != nil {
			return err
		}
		defer wnc.Close()
		w, err := queue.NewConfiguredWorker(ctx, wnc, cfg, metrics.NewWorker(reg), log)
		if err != nil {
			return err
		}
		go func() {
			err := w.Run(workerCtx)
			_ = wnc.Drain()
			workerDone <- err
		}()
	}

	api := httpapi.New(client, workers, httpapi.Options{
		Model: cfg.Model,
		Dims:  cfg.Dimensions,
		Limits: httpapi.Limits{
			MaxDocuments:     cfg.MaxDocuments,
			MaxDocumentBytes: cfg.MaxDocumentBytes,
			MaxBodyBytes:     cfg.MaxBodyBytes,
		},
		RequestTimeout: cfg.RequestTimeout,
		Cache:          cache,
		APIKey:         cfg.APIKey,
		Metrics:        apiMetrics,
		MetricsHandler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		Broker: func() error {
			if s := nc.Status(); s != nats.CONNECTED {
				return fmt.Errorf("connection is %s", s)
			}
			return nil
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
	case err := <-workerDone:
		runErr = fmt.Errorf("in-process worker stopped: %v", err)
		workerDone = nil
	}

	log.Info("api stopping: finishing requests in flight", zap.Duration("timeout", cfg.ShutdownTimeout))
	shutCtx, cancelShut := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancelShut()
	if err := srv.Shutdown(shutCtx); err != nil {
		log.Warn("http shutdown incomplete", zap.Error(err))
	}
	stopWorker()
	if workerDone != nil {
		if err := <-workerDone; err != nil && !errors.Is(err, context.Canceled) && runErr == nil {
			runErr = err
		}
	}
	if err := nc.Drain(); err != nil {
		log.Warn("nats drain", zap.Error(err))
	}
	log.Info("api stopped")
	return runErr
}
