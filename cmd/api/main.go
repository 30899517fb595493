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
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/embed"
	"github.com/waywo/embed/internal/httpapi"
	"github.com/waywo/embed/internal/metrics"
	"github.com/waywo/embed/internal/projectsync"
	"github.com/waywo/embed/internal/queue"
	"github.com/waywo/embed/internal/worker"
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
		if err := httpapi.Probe(ctx, cfg.HTTPAddr); err != nil {
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

// system is what every mode of the api needs: NATS (embedded or not), the
// jobs stream, the workers' registry, the queue client and, when this
// process runs one, the in-process worker.
type system struct {
	ns      *server.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	workers *queue.Registry
	client  *queue.Client
	reg     *prometheus.Registry

	workerDone chan error // nil without an in-process worker: never ready
	stopWorker context.CancelFunc
	closers    []func()
}

// start brings the system up. With no NATS_URL it starts the embedded
// nats-server, unless joinRunning is set and one already answers at
// EMBED_NATS_ADDR (a running api's), which it then uses with its workers.
func start(ctx context.Context, cfg config.Config, log *zap.Logger, joinRunning bool) (_ *system, err error) {
	s := &system{reg: metrics.NewRegistry(), stopWorker: func() {}}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if cfg.Embedded() && joinRunning {
		if nc, err := queue.Connect("nats://"+cfg.NATSAddr, "embed-api-"+cfg.WorkerID, nil, cfg.NATSAuth, log, nats.MaxReconnects(0)); err == nil {
			nc.Close()
			log.Info("using the running api's nats-server and workers", zap.String("addr", cfg.NATSAddr))
			cfg.NATSURL = "nats://" + cfg.NATSAddr
			cfg.Worker = "off"
		}
	}
	if cfg.Embedded() {
		s.ns, err = queue.StartEmbedded(queue.EmbeddedOptions{
			Addr:     cfg.NATSAddr,
			StoreDir: cfg.DataDir, // nats-server adds jetstream/
			User:     cfg.NATSAuth.User,
			Password: cfg.NATSAuth.Password,
			Token:    cfg.NATSAuth.Token,
			Log:      log,
		})
		if err != nil {
			return nil, err
		}
		ns := s.ns
		s.closers = append(s.closers, func() { ns.Shutdown(); ns.WaitForShutdown() })
		log.Info("embedded nats-server listening", zap.String("url", ns.ClientURL()))
	}
	s.nc, err = queue.Connect(cfg.NATSURL, "embed-api", s.ns, cfg.NATSAuth, log)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, s.nc.Close)
	if s.js, err = jetstream.New(s.nc); err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := queue.EnsureJobsStream(setupCtx, s.js, queue.StreamLimits{MaxMsgs: cfg.StreamMaxMsgs, MaxBytes: cfg.StreamMaxBytes}); err != nil {
		return nil, err
	}
	if err := queue.EnsureDeadLetters(setupCtx, s.js); err != nil {
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
		workerCtx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
		s.stopWorker = stopWorker
		s.workerDone = make(chan error, 1)
		go func() {
			err := w.Run(workerCtx)
			_ = wnc.Drain()
			s.workerDone <- err
		}()
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

// stop ends the in-process worker (its batch in flight finishes and is
// acked) and returns its error, then drains NATS.
func (s *system) stop(log *zap.Logger) error {
	s.stopWorker()
	var err error
	if s.workerDone != nil {
		if werr := <-s.workerDone; werr != nil && !errors.Is(werr, context.Canceled) {
			err = werr
		}
		s.workerDone = nil
	}
	if derr := s.nc.Drain(); derr != nil {
		log.Warn("nats drain", zap.Error(derr))
	}
	return err
}

func (s *system) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// openSync opens WAYWO_DB and returns the syncer over it.
func openSync(ctx context.Context, cfg config.Config, s *system, log *zap.Logger) (*projectsync.Syncer, error) {
	store, err := db.Open(ctx, cfg.DBPath, log)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { _ = store.Close() })
	return &projectsync.Syncer{
		Store: store, Embedder: s.client, Model: cfg.Model, Dims: cfg.Dimensions,
		MaxTextBytes: cfg.MaxDocumentBytes, Now: time.Now, Log: log.Named("sync"),
		Fingerprint: func() (embed.Fingerprint, bool) {
			fp, _, ok := s.workers.Fingerprint()
			return fp, ok
		},
	}, nil
}

// projectsAPI serves the sync's HTTP routes.
type projectsAPI struct {
	js     jetstream.JetStream
	syncer *projectsync.Syncer
}

func (p projectsAPI) Changed(ctx context.Context, id int64) error {
	return queue.PublishProjectChanged(ctx, p.js, id, "http")
}

func (p projectsAPI) Status(ctx context.Context) (any, error) {
	st, err := p.syncer.Status(ctx)
	if err != nil {
		return nil, err
	}
	if st.Queued, err = queue.ProjectsBacklog(ctx, p.js); err != nil {
		return nil, fmt.Errorf("%w: %w", queue.ErrQueue, err)
	}
	return st, nil
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
	defer sys.close()
	cache, err := embed.NewCache(cfg.CacheSize)
	if err != nil {
		return err
	}
	apiMetrics := metrics.NewAPI(sys.reg, func() (int, int) {
		ready, _ := sys.workers.Ready()
		return len(sys.workers.Live()), ready
	}, func() (queue.Stats, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return queue.ReadStats(ctx, sys.js)
	})

	var projects httpapi.Projects
	syncCtx, stopSync := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSync()
	syncDone := make(chan struct{})
	if cfg.Sync {
		syncer, err := openSync(ctx, cfg, sys, log)
		if err != nil {
			return err
		}
		cons, err := queue.EnsureProjects(ctx, sys.js, cfg.RequestTimeout+30*time.Second, cfg.MaxDeliver)
		if err != nil {
			return err
		}
		projects = projectsAPI{js: sys.js, syncer: syncer}
		syncMetrics := metrics.NewSync(sys.reg, func() (uint64, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			return queue.ProjectsBacklog(ctx, sys.js)
		})
		consumer := &projectsync.Consumer{
			Syncer: syncer, Consumer: cons, JS: sys.js, Ready: sys.ready,
			Batch: cfg.BatchSize, Parallel: cfg.SyncBatches, MaxDeliver: cfg.MaxDeliver,
			Timeout: cfg.RequestTimeout, Observer: syncMetrics, Log: log.Named("sync"),
		}
		go func() {
			defer close(syncDone)
			done := make(chan struct{})
			go func() {
				defer close(done)
				projectsync.RunReconciler(syncCtx, syncer, sys.js, cfg.ReconcileInterval, syncMetrics, log.Named("reconcile"))
			}()
			consumer.Run(syncCtx)
			<-done
		}()
		log.Info("project sync on", zap.String("db", syncer.Store.Path()), zap.Duration("reconcile_interval", cfg.ReconcileInterval))
	} else {
		close(syncDone)
	}

	api := httpapi.New(sys.client, sys.workers, httpapi.Options{
		Model: cfg.Model,
		Dims:  cfg.Dimensions,
		Fingerprint: func() (embed.Fingerprint, bool) {
			fp, _, ok := sys.workers.Fingerprint()
			return fp, ok
		},
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
	case err := <-sys.workerDone:
		runErr = fmt.Errorf("in-process worker stopped: %v", err)
		sys.workerDone = nil
	}

	log.Info("api stopping: finishing requests in flight", zap.Duration("timeout", cfg.ShutdownTimeout))
	shutCtx, cancelShut := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancelShut()
	if err := srv.Shutdown(shutCtx); err != nil {
		log.Warn("http shutdown incomplete", zap.Error(err))
	}
	stopSync()
	<-syncDone
	if err := sys.stop(log); err != nil && runErr == nil {
		runErr = err
	}
	log.Info("api stopped")
	return runErr
}
