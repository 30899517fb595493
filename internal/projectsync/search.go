// Search over the vectors the sync writes: the index the Runner keeps
// current, asked by the api's /search and /projects/{id}/similar.

package projectsync

import (
	"context"

	"github.com/waywo/embed/embedclient"
	"github.com/waywo/embed/internal/search"
)

// Search answers the k rows nearest to v, a query's vector, among those
// with a vector of the model the workers serve now (valid projects only
// with validOnly). It fails with ErrNotRunning while WAYWO_DB cannot be
// opened and search.ErrLoading until the index's first load is done.
func (r *Runner) Search(ctx context.Context, v []float32, k int, validOnly bool) (search.Result, error) {
	s, err := r.running()
	if err != nil {
		return search.Result{}, err
	}
	return r.index.Search(ctx, s.Store, search.Query{Vector: v, K: k, ValidOnly: validOnly, Digest: r.digest()})
}

// Similar answers the k rows nearest to project id's own vector, itself
// left out; search.ErrNotFound when it has none.
func (r *Runner) Similar(ctx context.Context, id int64, k int, validOnly bool) (search.Result, error) {
	s, err := r.running()
	if err != nil {
		return search.Result{}, err
	}
	return r.index.Similar(ctx, s.Store, id, k, validOnly, r.digest())
}

// digest is the model digest whose vectors are searched: the one the
// workers serve now or, while none is live, the one most indexed rows
// hold (empty for an empty index, where Similar takes the project's own).
func (r *Runner) digest() string {
	if fp, ok := r.workers.Fingerprint(); ok {
		return fp.Digest
	}
	return r.index.CommonDigest()
}

// indexStatus is the search index as sync-status reports it.
func (r *Runner) indexStatus() *embedclient.SearchIndex {
	st := r.index.Status()
	return &embedclient.SearchIndex{
		State: st.State, Rows: st.Rows, Stale: r.index.Stale(r.digest()),
		Loaded: st.Loaded, LoadSeconds: st.LoadSeconds, Error: st.Error,
	}
}

// IndexStats are the index's rows, stale rows and first load's duration,
// for the metrics.
func (r *Runner) IndexStats() (rows, stale int, loadSeconds float64) {
	return r.index.Len(), r.index.Stale(r.digest()), r.index.Status().LoadSeconds
}
