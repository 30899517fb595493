package search_test

import (
	"context"
	"database/sql"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/search"
	"github.com/waywo/embed/internal/search/searchtest"
	"github.com/waywo/embed/internal/vector"
)

const dims = 4096

func open(t *testing.T, rows int) (*search.Index, *db.Store, string, *searchtest.Data) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "waywo.db")
	d := searchtest.NewData(dims, 40, 1)
	_, err := searchtest.Fill(context.Background(), path, d, rows)
	require.NoError(t, err)
	store, err := db.Open(context.Background(), path, zap.NewNop())
	require.NoError(t, err)
	t.Cleanup(func() { store.Close() })
	x := search.New(dims)
	return x, store, path, d
}

func ids(r search.Result) []int64 {
	var out []int64
	for _, h := range r.Hits {
		out = append(out, h.ID)
	}
	return out
}

func exactIDs(hs []searchtest.Hit) []int64 {
	var out []int64
	for _, h := range hs {
		out = append(out, h.ID)
	}
	return out
}

// A search answers what an exact scan of the file answers: the same ids
// in the same order, with the same scores, valid projects only unless
// asked otherwise; a project's neighbours leave it out.
func TestSearchIsTheExactScan(t *testing.T) {
	t.Parallel()
	ollamatest.Exclusive(t) // loads both cores for a minute under -race
	ctx := context.Background()
	x, store, path, d := open(t, 3000)
	_, err := x.Search(ctx, store, search.Query{Vector: d.Query(), K: 10, Digest: searchtest.Digest})
	require.ErrorIs(t, err, search.ErrLoading)
	r, err := x.Refresh(ctx, store, zap.NewNop())
	require.NoError(t, err)
	require.Equal(t, 3000, r.Loaded)
	require.Equal(t, "ready", x.Status().State)

	// Every third query asks for all rows, the others for valid rows
	// only; the exact answers of each kind come from one pass over the
	// file.
	qs := make([][]float32, 30)
	var kind [2][][]float32 // [0]: all rows, [1]: valid only
	for i := range qs {
		qs[i] = d.Query()
		kind[b2i(i%3 != 0)] = append(kind[b2i(i%3 != 0)], qs[i])
	}
	var exact [2][][]searchtest.Hit
	for v := range kind {
		exact[v], err = searchtest.ExactMany(ctx, path, kind[v], 10, v == 1, searchtest.Digest, 0)
		require.NoError(t, err)
	}
	var seen [2]int
	for i, q := range qs {
		valid := i%3 != 0
		got, err := x.Search(ctx, store, search.Query{Vector: q, K: 10, ValidOnly: valid, Digest: searchtest.Digest})
		require.NoError(t, err)
		want := exact[b2i(valid)][seen[b2i(valid)]]
		seen[b2i(valid)]++
		require.Equal(t, exactIDs(want), ids(got), "query %d", i)
		for j, h := range got.Hits {
			require.InDelta(t, want[j].Score, h.Score, 1e-5)
		}
		if valid {
			require.Equal(t, 2700, got.Searched)
		}
		require.Zero(t, got.Stale)
	}

	sim, err := x.Similar(ctx, store, 42, 5, true, searchtest.Digest)
	require.NoError(t, err)
	stored, err := store.StoredVectors(ctx, []int64{42})
	require.NoError(t, err)
	v, err := searchtest.Exact(ctx, path, decode(t, stored[0].Blob), 5, true, searchtest.Digest, 42)
	require.NoError(t, err)
	require.Equal(t, exactIDs(v), ids(sim))
	require.NotContains(t, ids(sim), int64(42))
	_, err = x.Similar(ctx, store, 999999, 5, true, searchtest.Digest)
	require.ErrorIs(t, err, search.ErrNotFound)
}

// The index follows the file: a Put is searchable at once; a refresh
// drops deleted rows and rows that lost their vector, reloads changed
// ones, and updates validity; only vectors of the digest asked for are
// searched, the others counted as stale.
func TestIndexFollowsTheFile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	x, store, path, d := open(t, 600)
	_, err := x.Refresh(ctx, store, zap.NewNop())
	require.NoError(t, err)
	raw, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
	require.NoError(t, err)
	defer raw.Close()

	// A new project, written and Put as the sync does, is the top hit of a
	// query equal to its vector.
	v := d.Vector()
	require.NoError(t, searchtest.Insert(ctx, raw, 5000, "New", true, v, searchtest.Digest))
	x.Put(search.Row{ID: 5000, Vector: v, Valid: true, Hash: searchtest.Hash(5000, v), Digest: searchtest.Digest})
	top := func(q []float32, valid bool) int64 {
		r, err := x.Search(ctx, store, search.Query{Vector: q, K: 1, ValidOnly: valid, Digest: searchtest.Digest})
		require.NoError(t, err)
		if len(r.Hits) == 0 {
			return 0
		}
		return r.Hits[0].ID
	}
	require.Equal(t, int64(5000), top(v, true))

	// It changes: the old vector no longer finds it, the new one does.
	v2 := d.Vector()
	require.NoError(t, searchtest.Insert(ctx, raw, 5000, "New", true, v2, searchtest.Digest))
	x.Put(search.Row{ID: 5000, Vector: v2, Valid: true, Hash: searchtest.Hash(5000, v2), Digest: searchtest.Digest})
	require.Equal(t, int64(5000), top(v2, true))
	require.NotEqual(t, int64(5000), top(v, true))

	// Invalidated, deleted, stripped of its vector, or of another model: a
	// refresh takes each into account.
	_, err = raw.Exec("UPDATE waywo_projects SET is_valid_project = 0 WHERE id = 5000")
	require.NoError(t, err)
	r, err := x.Refresh(ctx, store, zap.NewNop())
	require.NoError(t, err)
	require.Equal(t, 1, r.Revalidated)
	require.NotEqual(t, int64(5000), top(v2, true))
	require.Equal(t, int64(5000), top(v2, false))

	stored, err := store.StoredVectors(ctx, []int64{7, 8})
	require.NoError(t, err)
	_, err = raw.Exec("DELETE FROM waywo_projects WHERE id = 7")
	require.NoError(t, err)
	_, err = raw.Exec("UPDATE waywo_projects SET description_embedding = NULL WHERE id = 8")
	require.NoError(t, err)
	_, err = raw.Exec("UPDATE embed_sync_state SET model_digest = 'sha256:old' WHERE project_id = 9")
	require.NoError(t, err)
	r, err = x.Refresh(ctx, store, zap.NewNop())
	require.NoError(t, err)
	require.Equal(t, 2, r.Removed)
	require.Equal(t, 1, r.Loaded, "the row of another digest is reloaded")
	for _, sv := range stored {
		require.NotEqual(t, sv.ID, top(decode(t, sv.Blob), false))
	}
	res, err := x.Search(ctx, store, search.Query{Vector: d.Query(), K: 5, Digest: searchtest.Digest})
	require.NoError(t, err)
	require.Equal(t, 1, res.Stale)
	require.Equal(t, 599, x.Len())
	_, err = x.Similar(ctx, store, 9, 5, false, searchtest.Digest)
	require.ErrorIs(t, err, search.ErrNotFound, "a vector of another model has no neighbours in this one's")
}

// Below the rows the centre is taken from, every row is scored exactly.
func TestSmallIndexScoresEveryRow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	x, store, path, d := open(t, 50)
	_, err := x.Refresh(ctx, store, zap.NewNop())
	require.NoError(t, err)
	q := d.Query()
	got, err := x.Search(ctx, store, search.Query{Vector: q, K: 50, Digest: searchtest.Digest})
	require.NoError(t, err)
	want, err := searchtest.Exact(ctx, path, q, 50, false, searchtest.Digest, 0)
	require.NoError(t, err)
	require.Equal(t, exactIDs(want), ids(got))
	require.Equal(t, 50, got.Rescored)
}

func decode(t *testing.T, blob []byte) []float32 {
	t.Helper()
	v, err := vector.Decode(blob, dims)
	require.NoError(t, err)
	return v
}

// Recall@10 against the exact answer, measured on generated data of the
// shape of a corpus's embeddings: the floor is 0.99, and the error bound
// is meant to make it 1.
func TestRecallOnGeneratedData(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 10,000 vectors of 4096 dimensions")
	}
	t.Parallel()
	ollamatest.Exclusive(t) // loads both cores for a minute under -race
	ctx := context.Background()
	x, store, path, d := open(t, 10000)
	_, err := x.Refresh(ctx, store, zap.NewNop())
	require.NoError(t, err)
	const queries = 60
	// Even queries ask for valid rows only, odd ones for all; the exact
	// answers of each half come from one pass over the file.
	qs := make([][]float32, queries)
	for i := range qs {
		qs[i] = d.Query()
	}
	var half [2][][]float32
	for i, q := range qs {
		half[i%2] = append(half[i%2], q)
	}
	var exact [2][][]searchtest.Hit
	for h := range half {
		exact[h], err = searchtest.ExactMany(ctx, path, half[h], 10, h == 0, searchtest.Digest, 0)
		require.NoError(t, err)
	}
	var recall float64
	rescored := 0
	for i, q := range qs {
		got, err := x.Search(ctx, store, search.Query{Vector: q, K: 10, ValidOnly: i%2 == 0, Digest: searchtest.Digest})
		require.NoError(t, err)
		recall += searchtest.Recall(ids(got), exact[i%2][i/2])
		rescored += got.Rescored
	}
	recall /= queries
	t.Logf("10,000 rows, %d queries: recall@10 %.4f, %d rows scored exactly per search on average", queries, recall, rescored/queries)
	require.GreaterOrEqual(t, recall, 0.99)
}

// The search alone (the query already embedded) over 20,000 rows; the
// benchmark command compares it with sqlite-vector side by side.
func BenchmarkSearch(b *testing.B) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "waywo.db")
	d := searchtest.NewData(dims, 40, 1)
	_, err := searchtest.Fill(ctx, path, d, 20000)
	require.NoError(b, err)
	store, err := db.Open(ctx, path, zap.NewNop())
	require.NoError(b, err)
	defer store.Close()
	x := search.New(dims)
	_, err = x.Refresh(ctx, store, zap.NewNop())
	require.NoError(b, err)
	q := d.Query()
	for b.Loop() {
		if _, err := x.Search(ctx, store, search.Query{Vector: q, K: 10, ValidOnly: true, Digest: searchtest.Digest}); err != nil {
			b.Fatal(err)
		}
	}
}

// Where sign bits cannot tell near from far (isotropic noise, no corpus
// structure), the bound on their error sends nearly every row to the
// exact pass, and the answer is still the exact one.
func TestBoundRescoresWhatBitsCannotTell(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "waywo.db")
	store, err := db.Open(ctx, path, zap.NewNop())
	require.NoError(t, err)
	defer store.Close()
	raw, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
	require.NoError(t, err)
	defer raw.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	noise := func() []float32 {
		v := make([]float32, dims)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	tx, err := raw.Begin()
	require.NoError(t, err)
	const rows = 2000
	for id := int64(1); id <= rows; id++ {
		require.NoError(t, searchtest.Insert(ctx, tx, id, "p", true, noise(), searchtest.Digest))
	}
	require.NoError(t, tx.Commit())
	x := search.New(dims)
	_, err = x.Refresh(ctx, store, zap.NewNop())
	require.NoError(t, err)
	for range 5 {
		q := noise()
		got, err := x.Search(ctx, store, search.Query{Vector: q, K: 10, Digest: searchtest.Digest})
		require.NoError(t, err)
		want, err := searchtest.Exact(ctx, path, q, 10, false, searchtest.Digest, 0)
		require.NoError(t, err)
		require.Equal(t, exactIDs(want), ids(got))
		require.Greater(t, got.Rescored, rows/2, "the bound widened the exact pass")
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
