// Command api is the HTTP front door of the embedding pipeline. Without
// NATS_URL it also starts an embedded nats-server and an in-process worker,
// so one command runs the whole system next to an Ollama.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"go.uber.org/zap"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/system"

	"github.com/waywo/embed/internal/httpapi"
)

// apiOverheadBytes is what the api holds beside its requests in flight,
// for its Go memory limit: the embedded nats-server, the sync, the cache.
const apiOverheadBytes = 192 << 20

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
		if os.Getenv("GOMEMLIMIT") == "" {
			// The requests' budget and what the api holds beside it (the
			// embedded nats-server, the sync, the cache): the collector
			// works harder near it rather than let the heap double.
			debug.SetMemoryLimit(cfg.MaxInflightBytes + apiOverheadBytes)
		}
		err = system.RunAPI(ctx, cfg, log, nil)
	case "reindex":
		err = reindexCommand(ctx, cfg, log, args, os.Stdout, os.Stderr)
	case "deadletters":
		err = deadLettersCommand(ctx, cfg, log, args, os.Stdout)
	case "model":
		err = modelCommand(ctx, cfg, log, args, os.Stdout, os.Stderr)
	case "healthcheck":
		err = httpapi.Healthcheck(ctx, cfg.HTTPAddr)
	default:
		err = fmt.Errorf("unknown subcommand %q; run `api --help`", sub)
	}
	if err != nil && sub == "" {
		log.Error("api failed", zap.Error(err))
	}
	_ = log.Sync()
	if err != nil {
		if sub != "" {
			// A command's user reads one line: the reason, plainly.
			fmt.Fprintf(os.Stderr, "api %s: %v\n", sub, err)
		}
		os.Exit(1)
	}
}
