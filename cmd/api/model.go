package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/modelinstall"
)

// modelCommand is `api model install [--force] [SOURCE]` and
// `api model prepare IN.gguf OUT.gguf`.
func modelCommand(ctx context.Context, cfg config.Config, log *zap.Logger, args []string, out, progress io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("model wants install or prepare; run `api --help`")
	}
	action, args := args[0], args[1:]
	fs := flag.NewFlagSet("model "+action, flag.ContinueOnError)
	fs.SetOutput(progress)
	switch action {
	case "install":
		force := fs.Bool("force", false, "install again even when the model in Ollama passes the checks")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() > 1 {
			return fmt.Errorf("model install takes at most one source, got %q", fs.Args())
		}
		source := cfg.ModelSource
		if fs.NArg() == 1 {
			source = fs.Arg(0)
		}
		res, err := modelinstall.Install(ctx, modelinstall.Options{
			Ollama: cfg.OllamaHost, Model: cfg.Model, Dims: cfg.Dimensions, Context: cfg.Context,
			Source: source, SHA256: cfg.ModelSHA256, WorkDir: filepath.Join(cfg.DataDir, "models"),
			Force: *force, Timeout: cfg.ModelTimeout, Progress: progress, Log: log,
		})
		if err != nil {
			return err
		}
		if res.AlreadyInstalled {
			fmt.Fprintf(out, "model %s is installed in Ollama at %s and serves %d-dimensional vectors (digest %s, Ollama %s): nothing to do\n",
				cfg.Model, cfg.OllamaHost, cfg.Dimensions, res.Fingerprint.ShortDigest(), res.Fingerprint.OllamaVersion)
			return nil
		}
		for _, c := range res.Prepared.Changes {
			fmt.Fprintln(out, "prepared:", c)
		}
		fmt.Fprintf(out, "model %s installed in Ollama at %s from %s (%s, %d bytes): num_ctx and num_batch %d; digest %s, Ollama %s; warm-up embedding of %d dimensions done\n",
			cfg.Model, cfg.OllamaHost, source, res.Prepared.Architecture, res.Prepared.Size, cfg.Context,
			res.Fingerprint.ShortDigest(), res.Fingerprint.OllamaVersion, cfg.Dimensions)
		return nil
	case "prepare":
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() != 2 {
			return fmt.Errorf("usage: api model prepare IN.gguf OUT.gguf")
		}
		p, err := modelinstall.PrepareFile(fs.Arg(0), fs.Arg(1), cfg.Dimensions)
		if err != nil {
			return err
		}
		if len(p.Changes) == 0 {
			fmt.Fprintf(out, "%s (%s) needs no change; copied to %s\n", fs.Arg(0), p.Architecture, p.Path)
		}
		for _, c := range p.Changes {
			fmt.Fprintln(out, "prepared:", c)
		}
		fmt.Fprintf(out, "wrote %s (%d bytes, %s)\n", p.Path, p.Size, p.Digest)
		return nil
	}
	return fmt.Errorf("model wants install or prepare, got %q", action)
}
