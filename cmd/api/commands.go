package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/deadletter"
	"github.com/waywo/embed/internal/projectsync"
	"github.com/waywo/embed/internal/system"
)

// reindexCommand is `api reindex [--all]`: sync every missing or stale
// project now (every project with --all) through the running system's
// workers when an api is up, or through its own embedded system, with a
// progress bar on stderr and a summary on stdout. It fails when projects
// are left undone; projects that cannot be embedded as they stand are
// listed (and recorded, as the sync does) without failing the command.
func reindexCommand(ctx context.Context, cfg config.Config, log *zap.Logger, args []string, out, progress io.Writer) error {
	fs := flag.NewFlagSet("reindex", flag.ContinueOnError)
	fs.SetOutput(progress)
	all := fs.Bool("all", false, "re-embed every project, changed or not")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("reindex takes no arguments, got %q", fs.Args())
	}
	sys, err := system.Open(ctx, cfg, log, true)
	if err != nil {
		return err
	}
	defer func() { _ = sys.Stop() }()
	syncer, err := sys.OpenSyncer(ctx)
	if err != nil {
		return err
	}
	if err := sys.WaitReady(ctx, time.Minute); err != nil {
		return err
	}
	ids, err := syncer.Targets(ctx, *all)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "reindex: %d projects to sync in %s (model %s, %d dimensions)\n", len(ids), syncer.Store.Path(), cfg.Model, cfg.Dimensions)
	bar := progressbar.NewOptions(len(ids),
		progressbar.OptionSetWriter(progress),
		progressbar.OptionSetDescription("reindex"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("projects"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionThrottle(250*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(progress) }),
	)
	sum := projectsync.Reindex(ctx, syncer, ids, projectsync.ReindexOptions{
		Force: *all, Batch: cfg.BatchSize, Parallel: cfg.SyncBatches, Attempts: 3,
		Progress: func(n int) { _ = bar.Add(n) },
	})
	_ = bar.Finish()
	sum.Print(out)
	if n := len(sum.Undone); n > 0 {
		return fmt.Errorf("%d projects were not synced (see above); run reindex again once the cause is fixed", n)
	}
	return nil
}

// deadLettersCommand is `api deadletters [list|replay] [--kind K] [--limit N]`.
func deadLettersCommand(ctx context.Context, cfg config.Config, log *zap.Logger, args []string, out io.Writer) error {
	action := "list"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		action, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("deadletters", flag.ContinueOnError)
	fs.SetOutput(out)
	kind := fs.String("kind", "", "jobs or projects; empty for both (replay: projects only)")
	limit := fs.Int("limit", 100, "most dead letters to read")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if k := deadletter.Kind(*kind); k != "" && k != deadletter.KindJobs && k != deadletter.KindProjects {
		return fmt.Errorf("--kind wants jobs or projects, got %q", *kind)
	}
	if action != "list" && action != "replay" {
		return fmt.Errorf("deadletters wants list or replay, got %q", action)
	}
	cfg.Worker = "off" // reading dead letters needs no model
	sys, err := system.Open(ctx, cfg, log, true)
	if err != nil {
		return err
	}
	defer func() { _ = sys.Stop() }()
	if action == "replay" {
		*kind = string(deadletter.KindProjects)
	}
	dls, err := deadletter.List(ctx, sys.JS, deadletter.Kind(*kind), *limit)
	if err != nil {
		return err
	}
	if action == "list" {
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tKIND\tFAILED AT\tATTEMPTS\tSUBJECT\tREASON")
		for _, d := range dls {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", d.Seq, d.Kind, d.FailedAt, d.Deliveries, d.Subject, d.Reason)
		}
		tw.Flush()
		fmt.Fprintf(out, "%d dead letters\n", len(dls))
		return nil
	}
	replayed, err := projectsync.Replay(ctx, sys.JS, dls)
	fmt.Fprintf(out, "replayed %d project events; the running api syncs them\n", replayed)
	return err
}
