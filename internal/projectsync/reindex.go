package projectsync

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/waywo/embed/internal/backoff"
)

// ReindexOptions shape a reindex.
type ReindexOptions struct {
	Force    bool // re-embed unchanged projects too
	Batch    int  // projects per sync
	Parallel int  // syncs in flight
	// Attempts per batch for passing failures (queue, workers, database).
	Attempts int
	// Progress, when set, is told each time projects are done, one call
	// at a time.
	Progress func(done int)
}

// Summary is what a reindex did.
type Summary struct {
	Total    int
	Counts   map[Outcome]int // Retry counts projects left undone
	Failures []FailedProject // Failed: for good, until the row changes
	Undone   []FailedProject // Retry: still failing after every attempt
	Took     time.Duration
}

// Reindex syncs ids now, Batch at a time with Parallel in flight, without
// going through the events stream: the caller watches it finish. It stops
// starting batches when ctx ends; what was not started counts as undone.
func Reindex(ctx context.Context, s *Syncer, ids []int64, o ReindexOptions) Summary {
	start := time.Now()
	o.Batch, o.Parallel, o.Attempts = max(o.Batch, 1), max(o.Parallel, 1), max(o.Attempts, 1)
	sum := Summary{Total: len(ids), Counts: map[Outcome]int{}}
	var mu sync.Mutex
	record := func(id int64, r Result) {
		sum.Counts[r.Outcome]++
		switch r.Outcome {
		case Failed:
			sum.Failures = append(sum.Failures, FailedProject{ID: id, Reason: r.Reason})
		case Retry:
			sum.Undone = append(sum.Undone, FailedProject{ID: id, Reason: r.Reason})
		}
	}

	batches := make(chan []int64)
	var wg sync.WaitGroup
	for range o.Parallel {
		wg.Go(func() {
			for batch := range batches {
				results := syncWithRetries(ctx, s, batch, o)
				mu.Lock()
				for _, id := range batch {
					record(id, results[id])
				}
				if o.Progress != nil {
					o.Progress(len(batch))
				}
				mu.Unlock()
			}
		})
	}
	sent := 0
feed:
	for ; sent < len(ids); sent += o.Batch {
		select {
		case batches <- ids[sent:min(sent+o.Batch, len(ids))]:
		case <-ctx.Done():
			break feed
		}
	}
	close(batches)
	wg.Wait()
	for _, id := range ids[min(sent, len(ids)):] {
		record(id, Result{Outcome: Retry, Reason: "not started: " + context.Cause(ctx).Error()})
	}
	slices.SortFunc(sum.Failures, func(a, b FailedProject) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortFunc(sum.Undone, func(a, b FailedProject) int { return cmp.Compare(a.ID, b.ID) })
	sum.Took = time.Since(start)
	return sum
}

// reindexDelay paces a reindex batch's attempts: 1 s, 2 s, 4 s…
var reindexDelay = backoff.Policy{First: time.Second, Max: 30 * time.Second}

// syncWithRetries syncs batch, then again the projects that failed for a
// passing reason, up to o.Attempts times, waiting reindexDelay between.
func syncWithRetries(ctx context.Context, s *Syncer, batch []int64, o ReindexOptions) map[int64]Result {
	out := s.Sync(ctx, batch, o.Force)
	for attempt := 1; attempt < o.Attempts; attempt++ {
		var again []int64
		for _, id := range batch {
			if out[id].Outcome == Retry {
				again = append(again, id)
			}
		}
		if len(again) == 0 || ctx.Err() != nil {
			break
		}
		s.Log.Warn("reindex batch failed; retrying", zap.Int("projects", len(again)), zap.String("reason", out[again[0]].Reason))
		sleep(ctx, reindexDelay.Delay(attempt))
		for id, r := range s.Sync(ctx, again, o.Force) {
			out[id] = r
		}
	}
	return out
}

// Print writes the summary for a person: counts by outcome, then the
// projects that failed and those left undone (50 of each at most).
func (s Summary) Print(w io.Writer) {
	rate := 0.0
	if secs := s.Took.Seconds(); secs > 0 {
		rate = float64(s.Total) / secs
	}
	fmt.Fprintf(w, "reindex done: %d projects in %s (%.1f/s)\n", s.Total, s.Took.Round(time.Millisecond), rate)
	for _, o := range []Outcome{Embedded, Unchanged, Missing, Superseded, Failed, Retry} {
		label := o.String()
		if o == Retry {
			label = "not done"
		}
		fmt.Fprintf(w, "  %-10s %d\n", label, s.Counts[o])
	}
	list := func(title string, ps []FailedProject) {
		if len(ps) == 0 {
			return
		}
		fmt.Fprintln(w, title)
		for i, p := range ps {
			if i == 50 {
				fmt.Fprintf(w, "  … and %d more (GET /projects/sync-status lists them all)\n", len(ps)-i)
				break
			}
			fmt.Fprintf(w, "  %d: %s\n", p.ID, p.Reason)
		}
	}
	list("failed (fix the row; it is retried when it changes):", s.Failures)
	list("not done:", s.Undone)
}
