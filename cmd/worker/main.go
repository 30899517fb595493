// Command worker pulls embedding jobs from NATS JetStream, runs them through
// Ollama in batches and replies. It is stateless: run one per GPU or Ollama
// runner, on any host that reaches NATS.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/httpapi"
	"github.com/waywo/embed/internal/workerproc"
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
	healthcheck := len(os.Args) > 1 && os.Args[1] == "healthcheck"
	if healthcheck {
		if cfg.MetricsAddr == "" {
			err = fmt.Errorf("EMBED_METRICS_ADDR is empty: this worker serves no /health")
		} else {
			err = httpapi.Healthcheck(ctx, cfg.MetricsAddr)
		}
	} else {
		err = workerproc.Run(ctx, cfg, log)
	}
	if err != nil && !healthcheck {
		log.Error("worker failed", zap.Error(err))
	}
	_ = log.Sync()
	if err != nil {
		if healthcheck {
			fmt.Fprintf(os.Stderr, "worker healthcheck: %v\n", err)
		}
		os.Exit(1)
	}
}
