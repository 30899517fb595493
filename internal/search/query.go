// A search: the first pass over the sign bits, then the exact scores of
// the best candidates.

package search

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/bits"
	"runtime"
	"slices"
	"sync"

	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/vector"
)

// The exact pass scores, first, the FirstCandidates nearest rows by their
// sign bits (CandidatesPerResult per result asked, or more). Sign bits give
// an estimate, not a score, so how far the estimate errs is measured on
// those candidates: their exact scores against their Hamming distances, a
// straight line and the spread around it. A row further away whose
// estimate plus Margin times that spread (or the largest error seen, if
// larger) still reaches the k-th exact score found could belong in the
// top k: every such row is scored exactly too, until none is left or
// MaxRescored rows were scored. Each round at most doubles the rows
// scored: a line fitted over the narrow band of distances of the nearest
// rows says little about rows far beyond it (one query of the benchmark's
// went from 64 rows straight to the 8,192 cap, where doubling stopped at
// 240 with the same answer).
const (
	CandidatesPerResult = 5
	MinCandidates       = 64
	Margin              = 5.0
	MaxRescored         = 8192
)

// Query is one search.
type Query struct {
	Vector    []float32 // the query's vector, as the model gave it
	K         int
	ValidOnly bool   // only rows with is_valid_project set
	Digest    string // only vectors of this model digest
	Exclude   int64  // a row left out (the project whose neighbours are asked for)
}

// Hit is one result.
type Hit struct {
	ID    int64
	Score float32 // cosine similarity
	Title string
}

// Result is a search's answer.
type Result struct {
	Hits []Hit
	// Digest is the model digest whose vectors were searched.
	Digest string
	// Searched is how many rows matched the filters; Stale how many rows
	// that would have were left out for a vector of another digest.
	Searched, Stale int
	// Rescored is how many candidates were scored exactly.
	Rescored int
}

// Source is the file the exact pass reads vectors from (a *db.Store).
type Source interface {
	// VectorReader reads on one connection until closed: one search's
	// reads share its page cache.
	VectorReader(ctx context.Context) (*db.VectorReader, error)
}

// vectorSource reads stored vectors: a *db.Store or a *db.VectorReader.
type vectorSource interface {
	StoredVectors(ctx context.Context, ids []int64) ([]db.StoredVector, error)
}

// Search answers q: the top K rows by cosine similarity of their stored
// vectors among those that match its filters.
func (x *Index) Search(ctx context.Context, src Source, q Query) (Result, error) {
	if err := x.loadErr(); err != nil {
		return Result{}, err
	}
	u := unit(q.Vector)
	if len(q.Vector) != x.dims || u == nil {
		return Result{}, fmt.Errorf("the query's vector has %d dimensions, or no length; want %d", len(q.Vector), x.dims)
	}
	rd, err := src.VectorReader(ctx)
	if err != nil {
		return Result{}, unreadable(ctx, err)
	}
	defer rd.Close()
	return x.search(ctx, rd, u, q)
}

// search answers q, u its unit vector, reading rows on rd.
func (x *Index) search(ctx context.Context, rd vectorSource, u []float32, q Query) (Result, error) {
	c, res := x.candidates(u, q)
	res.Digest = q.Digest
	var scored []scoredRow
	done, want := 0, c.upTo(max(q.K*CandidatesPerResult, MinCandidates))
	for done < want {
		more, err := x.rescore(ctx, rd, u, q, c.rows[done:want])
		if err != nil {
			return Result{}, err
		}
		scored, done = append(scored, more...), want
		want = min(c.upTo(min(c.reach(scored, q.K, done), 2*done)), max(MaxRescored, done))
	}
	res.Rescored = done
	for _, r := range scored {
		if r.eligible {
			res.Hits = append(res.Hits, r.Hit)
		}
	}
	sortHits(res.Hits)
	res.Hits = res.Hits[:min(len(res.Hits), q.K)]
	return res, nil
}

// scoredRow is a candidate scored exactly.
type scoredRow struct {
	Hit
	dist     int
	eligible bool // it still matches the query's filters, as the file says
}

// rescore scores rows exactly from the file. The file is the truth: a row
// changed since it was indexed is judged as it is now.
func (x *Index) rescore(ctx context.Context, src vectorSource, u []float32, q Query, rows []candidate) ([]scoredRow, error) {
	ids := make([]int64, len(rows))
	dist := make(map[int64]int, len(rows))
	for i, r := range rows {
		ids[i] = r.id
		dist[r.id] = int(r.dist)
	}
	stored, err := read(ctx, src, ids)
	if err != nil {
		return nil, err
	}
	out := make([]scoredRow, 0, len(stored))
	for _, sv := range stored {
		v, err := vector.Decode(sv.Blob, x.dims)
		if err != nil {
			continue
		}
		eligible := sv.ID != q.Exclude && (!q.ValidOnly || sv.Valid.Bool) && sv.Digest.String == q.Digest
		out = append(out, scoredRow{Hit: Hit{ID: sv.ID, Score: cosine(u, v), Title: sv.Title.String}, dist: dist[sv.ID], eligible: eligible})
	}
	return out, nil
}

// read reads ids' stored vectors; a failure other than the search's own
// deadline is ErrUnreadable.
func read(ctx context.Context, src vectorSource, ids []int64) ([]db.StoredVector, error) {
	stored, err := src.StoredVectors(ctx, ids)
	return stored, unreadable(ctx, err)
}

// unreadable marks a failure to read the file, other than the search's
// own deadline, as ErrUnreadable.
func unreadable(ctx context.Context, err error) error {
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("%w: %w", ErrUnreadable, err)
	}
	return err
}

func sortHits(hs []Hit) {
	slices.SortFunc(hs, func(a, b Hit) int {
		if c := cmp.Compare(b.Score, a.Score); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
}

// candidate is a row that matches the query's filters, with the Hamming
// distance of its bits to the query's.
type candidate struct {
	id   int64
	dist uint16
}

// candidates are the rows matching the query's filters, nearest first by
// their bits.
type candidates struct {
	rows []candidate
}

// upTo is how many of the nearest rows to score to have scored at least n,
// with every row at the last distance taken.
func (c candidates) upTo(n int) int {
	if n >= len(c.rows) {
		return len(c.rows)
	}
	i := n
	for i < len(c.rows) && c.rows[i].dist == c.rows[n-1].dist {
		i++
	}
	return i
}

// reach is how many of the nearest rows must be scored, given those
// scored so far: every row whose estimated score, plus the estimate's
// error, reaches the k-th best exact score found. While fewer than k
// eligible rows were found, twice as many as scored. done is how many of
// the nearest rows were scored.
func (c candidates) reach(scored []scoredRow, k, done int) int {
	var best []float32
	for _, r := range scored {
		if r.eligible {
			best = append(best, r.Score)
		}
	}
	if len(best) < k {
		return 2 * done
	}
	slices.SortFunc(best, func(a, b float32) int { return cmp.Compare(b, a) })
	kth := float64(best[k-1])
	a, b, spread, ok := fit(scored)
	if !ok {
		return 2 * done // one distance only: no estimate yet
	}
	// Every row up to the largest distance d with a + b·d + spread ≥ kth.
	n := done
	for n < len(c.rows) && a+b*float64(c.rows[n].dist)+spread >= kth {
		n++
	}
	return n
}

// fit is the straight line a + b·d through the scored rows' exact scores
// against their distances, and how far a score may lie above it: Margin
// times the residuals' standard deviation, or the largest residual seen,
// whichever is larger. Not ok when the rows have one distance only.
func fit(rows []scoredRow) (a, b, spread float64, ok bool) {
	var n, sd, ss, sdd, sds float64
	for _, r := range rows {
		d, s := float64(r.dist), float64(r.Score)
		n++
		sd += d
		ss += s
		sdd += d * d
		sds += d * s
	}
	den := n*sdd - sd*sd
	if n < 2 || den <= 0 {
		return 0, 0, 0, false
	}
	b = (n*sds - sd*ss) / den
	a = (ss - b*sd) / n
	var sq, top float64
	for _, r := range rows {
		e := float64(r.Score) - (a + b*float64(r.dist))
		sq += e * e
		top = max(top, e)
	}
	return a, b, max(Margin*math.Sqrt(sq/n), top), true
}

// candidates are the rows matching q, ordered by the Hamming distance of
// their bits to u's (in slot order while the index has no centre yet, all
// at distance 0), with what the result reports of the filters.
func (x *Index) candidates(u []float32, q Query) (candidates, Result) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var res Result
	di, known := x.digestOf[q.Digest]
	var slots []int32
	for s, id := range x.ids {
		if id == 0 || id == q.Exclude || (q.ValidOnly && !x.valid[s]) {
			continue
		}
		if !known || x.digest[s] != di {
			res.Stale++
			continue
		}
		slots = append(slots, int32(s))
	}
	res.Searched = len(slots)
	rows := make([]candidate, len(slots))
	if x.mean == nil {
		for i, s := range slots {
			rows[i] = candidate{id: x.ids[s]}
		}
		return candidates{rows}, res
	}
	qb := make([]uint64, x.words)
	x.signBits(u, qb)
	dist := x.distances(qb, slots)
	// Ordered by a counting sort over the distances (0 to dims).
	start := make([]int, x.dims+2)
	for _, d := range dist {
		start[d+1]++
	}
	for d := 1; d < len(start); d++ {
		start[d] += start[d-1]
	}
	for i, d := range dist {
		rows[start[d]] = candidate{id: x.ids[slots[i]], dist: d}
		start[d]++
	}
	return candidates{rows}, res
}

// distances are the Hamming distances from qb to each slot's bits, in
// parallel over large indexes; mu held.
func (x *Index) distances(qb []uint64, slots []int32) []uint16 {
	dist := make([]uint16, len(slots))
	work := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			b := x.bits[int(slots[i])*x.words : int(slots[i]+1)*x.words]
			n := 0
			for w, q := range qb {
				n += bits.OnesCount64(q ^ b[w])
			}
			dist[i] = uint16(n)
		}
	}
	parts := min(runtime.GOMAXPROCS(0), len(slots)/8192+1)
	if parts == 1 {
		work(0, len(slots))
		return dist
	}
	var wg sync.WaitGroup
	for p := range parts {
		lo, hi := p*len(slots)/parts, (p+1)*len(slots)/parts
		wg.Go(func() { work(lo, hi) })
	}
	wg.Wait()
	return dist
}

// Similar answers the top k rows nearest to project id's own stored
// vector, itself left out. digest empty takes the project's own.
func (x *Index) Similar(ctx context.Context, src Source, id int64, k int, validOnly bool, digest string) (Result, error) {
	if err := x.loadErr(); err != nil {
		return Result{}, err
	}
	rd, err := src.VectorReader(ctx)
	if err != nil {
		return Result{}, unreadable(ctx, err)
	}
	defer rd.Close() // the project's own row and its neighbours, on one connection
	stored, err := read(ctx, rd, []int64{id})
	if err != nil {
		return Result{}, err
	}
	if len(stored) == 0 {
		return Result{}, fmt.Errorf("%w: project %d has no row or no vector yet", ErrNotFound, id)
	}
	v, err := vector.Decode(stored[0].Blob, x.dims)
	if err != nil {
		return Result{}, fmt.Errorf("%w: project %d's vector is not one of this model's (%v); the sync re-embeds it", ErrNotFound, id, err)
	}
	switch own := stored[0].Digest.String; {
	case digest == "":
		digest = own
	case own != digest:
		return Result{}, fmt.Errorf("%w: project %d's vector is of another model than the workers serve; the sync re-embeds it", ErrNotFound, id)
	}
	u := unit(v)
	if u == nil {
		return Result{}, fmt.Errorf("%w: project %d's vector has no length; the sync re-embeds it", ErrNotFound, id)
	}
	return x.search(ctx, rd, u, Query{Vector: v, K: k, ValidOnly: validOnly, Digest: digest, Exclude: id})
}
