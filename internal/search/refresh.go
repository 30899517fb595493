// Bringing the index in line with the file: its first load, every
// reconcile, a replaced file.

package search

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/vector"
)

// loadBatch is how many vectors a refresh reads at a time (4 MiB of
// float32 at 4096 dimensions).
const loadBatch = 256

// loadState is how far the first load is.
type loadState struct {
	done   bool
	err    error // the latest refresh's failure, while none succeeded
	loaded int   // rows loaded by the refresh under way
	took   time.Duration
}

// Status is the index as sync-status reports it.
type Status struct {
	State       string  // "loading", "ready" or "failed"
	Rows        int     // indexed
	Loaded      int     // while loading: rows loaded so far
	LoadSeconds float64 // the first load's duration, once done
	Error       string  // why it failed, while State is "failed"
}

// Status says where the index stands.
func (x *Index) Status() Status {
	x.mu.RLock()
	defer x.mu.RUnlock()
	st := Status{State: "loading", Rows: len(x.slot), Loaded: x.load.loaded}
	switch {
	case x.load.done:
		st.State, st.LoadSeconds, st.Loaded = "ready", x.load.took.Seconds(), 0
	case x.load.err != nil:
		st.State, st.Error = "failed", x.load.err.Error()
	}
	return st
}

// loadErr is why the index cannot answer yet, or nil.
func (x *Index) loadErr() error {
	x.mu.RLock()
	defer x.mu.RUnlock()
	switch {
	case x.load.done:
		return nil
	case x.load.err != nil:
		return fmt.Errorf("%w: its first load failed (retried at the next reconcile): %v", ErrLoading, x.load.err)
	}
	return fmt.Errorf("%w: %d rows so far", ErrLoading, x.load.loaded)
}

// Refreshed says what a refresh changed.
type Refreshed struct {
	Loaded, Removed, Revalidated int
}

// Rows is the file a refresh reads (a *db.Store).
type Rows interface {
	Source
	vectorSource
	EachVectorRow(ctx context.Context, fn func(db.VectorRow) error) error
}

// Refresh makes the index hold what the file holds: rows new or changed
// since they were indexed (their content or digest) are loaded, rows
// whose validity changed are updated, rows gone or without a vector are
// dropped. A row Put by the sync while the refresh ran keeps the sync's
// vector. The first refresh to succeed ends the loading; progress is
// logged every 5 s while it lasts.
func (x *Index) Refresh(ctx context.Context, src Rows, log *zap.Logger) (Refreshed, error) {
	start := time.Now()
	x.mu.Lock()
	since := x.seq // a row Put after this is newer than what this reads
	first := !x.load.done
	x.load.loaded = 0
	x.mu.Unlock()
	var out Refreshed
	seen := map[int64]bool{}
	var batch []int64
	lastLog := time.Now()
	flush := func() error {
		n, err := x.loadRows(ctx, src, batch, since)
		batch = batch[:0]
		out.Loaded += n
		x.mu.Lock()
		x.load.loaded = out.Loaded
		x.mu.Unlock()
		if first && time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			log.Info("search index loading", zap.Int("rows", out.Loaded), zap.Duration("so_far", time.Since(start)))
		}
		return err
	}
	err := src.EachVectorRow(ctx, func(r db.VectorRow) error {
		if !r.HasVector {
			return nil
		}
		seen[r.ID] = true
		x.mu.Lock()
		s, ok := x.slot[r.ID]
		same := ok && x.key[s] == x.keyOf(r.Hash.String, r.Digest.String)
		if same && x.valid[s] != r.Valid.Bool {
			x.valid[s] = r.Valid.Bool
			out.Revalidated++
		}
		x.mu.Unlock()
		if same {
			return nil
		}
		if batch = append(batch, r.ID); len(batch) == loadBatch {
			return flush()
		}
		return nil
	})
	if err == nil && len(batch) > 0 {
		err = flush()
	}
	if err != nil {
		x.mu.Lock()
		if !x.load.done {
			x.load.err = err
		}
		x.mu.Unlock()
		return out, fmt.Errorf("refresh the search index: %w", err)
	}
	x.mu.Lock()
	for id, s := range x.slot {
		if !seen[id] && x.putSeq[s] <= since {
			x.delete(id)
			out.Removed++
		}
	}
	if first {
		x.load = loadState{done: true, took: time.Since(start)}
	}
	rows := len(x.slot)
	x.mu.Unlock()
	if first {
		log.Info("search index loaded", zap.Int("rows", rows), zap.Duration("took", time.Since(start)))
	}
	return out, nil
}

// loadRows reads ids' vectors and indexes those not Put since; it returns
// how many it indexed.
func (x *Index) loadRows(ctx context.Context, src vectorSource, ids []int64, since uint64) (int, error) {
	stored, err := src.StoredVectors(ctx, ids)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, sv := range stored {
		v, err := vector.Decode(sv.Blob, x.dims)
		if err != nil {
			continue // not a vector of ours: the sync re-embeds it
		}
		u := unit(v)
		if u == nil {
			continue
		}
		x.mu.Lock()
		if s, ok := x.slot[sv.ID]; !ok || x.putSeq[s] <= since {
			x.put(Row{ID: sv.ID, Valid: sv.Valid.Bool, Hash: sv.Hash.String, Digest: sv.Digest.String}, u, since)
			n++
		}
		x.mu.Unlock()
	}
	return n, nil
}
