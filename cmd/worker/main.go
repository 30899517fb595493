// Command worker pulls embedding jobs from NATS JetStream, runs them through
// Ollama in batches and replies. It is stateless: run one per GPU or Ollama
// runner, on any host that reaches NATS.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/queue"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help") {
		fmt.Println("worker: a waywo embedding worker. Configured by environment:")
		config.Usage(os.Stdout)
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
	nc, err := queue.Connect(cfg.NATSURL, "embed-worker-"+cfg.WorkerID, nil, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	w, err := queue.NewConfiguredWorker(ctx, nc, cfg, log)
	if err != nil {
		return err
	}
	err = w.Run(ctx)
	if derr := nc.Drain(); derr != nil {
		log.Warn("nats drain", zap.Error(derr))
	}
	return err
}
