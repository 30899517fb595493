package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/embedclient"
	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/search/searchtest"
)

// searchAPI is a running api with its projects synced, as a search test
// sees it.
type searchAPI struct {
	t      *testing.T
	base   string
	path   string
	client *embedclient.Client
	raw    *sql.DB
}

// startSearchAPI starts an api over n projects (every seventh not a valid
// project) and waits until every one is embedded and indexed.
func startSearchAPI(t *testing.T, n int, extra map[string]string) *searchAPI {
	t.Helper()
	cfg, path := syncConfig(t, extra)
	base, cancel, done := startRun(t, cfg)
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	insertProjects(t, path, 1, n)
	raw, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
	require.NoError(t, err)
	t.Cleanup(func() { raw.Close() })
	_, err = raw.Exec("UPDATE waywo_projects SET is_valid_project = 0 WHERE id % 7 = 0")
	require.NoError(t, err)
	a := &searchAPI{t: t, base: base, path: path, client: embedclient.New(base), raw: raw}
	for id := 1; id <= n; id++ { // announced, as the backend does
		resp, err := http.Post(fmt.Sprintf("%s/projects/%d/changed", base, id), "", nil)
		require.NoError(t, err)
		resp.Body.Close()
	}
	require.Eventually(t, func() bool {
		st := a.status()
		return st.Embedded == n && st.Search != nil && st.Search.State == "ready" && st.Search.Rows == n
	}, 90*time.Second, 50*time.Millisecond, "every project embedded and indexed")
	return a
}

func (a *searchAPI) status() embedclient.SyncStatus {
	resp, err := http.Get(a.base + "/projects/sync-status")
	require.NoError(a.t, err)
	defer resp.Body.Close()
	var st embedclient.SyncStatus
	require.NoError(a.t, json.NewDecoder(resp.Body).Decode(&st))
	return st
}

// search posts body to /search and decodes the answer, or fails with the
// status.
func (a *searchAPI) search(body string) (embedclient.SearchResponse, int, string) {
	resp, err := http.Post(a.base+"/search", "application/json", bytes.NewBufferString(body))
	require.NoError(a.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(a.t, err)
	var out embedclient.SearchResponse
	if resp.StatusCode == http.StatusOK {
		require.NoError(a.t, json.Unmarshal(raw, &out))
	}
	return out, resp.StatusCode, string(raw)
}

// exact is the answer of an exact scan of the file, done apart from the
// api: the query embedded by /embed as a query, every stored vector of
// the served model scored in float64.
func (a *searchAPI) exact(query string, k int, validOnly bool, digest string) []int64 {
	qv, err := a.client.EmbedQueries(context.Background(), []string{query})
	require.NoError(a.t, err)
	hits, err := searchtest.Exact(context.Background(), a.path, qv[0], k, validOnly, digest, 0)
	require.NoError(a.t, err)
	return hitIDs(hits)
}

func hitIDs(hs []searchtest.Hit) []int64 {
	out := []int64{}
	for _, h := range hs {
		out = append(out, h.ID)
	}
	return out
}

func resultIDs(r embedclient.SearchResponse) []int64 {
	out := []int64{}
	for _, h := range r.Results {
		out = append(out, h.ID)
	}
	return out
}

// /search answers what an exact scan of the file answers, for valid
// projects and for all; /projects/{id}/similar the same for a project's
// own vector, itself left out. More rows than the index takes its centre
// from, so that the first pass over sign bits is what picks candidates.
func TestSearchIsTheExactScanOfTheFile(t *testing.T) {
	t.Parallel()
	const n = 320
	a := startSearchAPI(t, n, nil)
	ctx := context.Background()
	for i := range 12 {
		query := ollamatest.Sentence(uint64(5000+i), 3+i%4)
		valid := i%3 != 0
		got, code, body := a.search(fmt.Sprintf(`{"query": %q, "k": 10, "valid_only": %t}`, query, valid))
		require.Equal(t, http.StatusOK, code, body)
		require.NotEmpty(t, got.ModelDigest)
		require.Equal(t, a.exact(query, 10, valid, got.ModelDigest), resultIDs(got), "query %q, valid only %t", query, valid)
		require.Zero(t, got.Stale)
		if valid {
			require.Equal(t, n-n/7, got.Searched)
			for _, r := range got.Results {
				require.NotZero(t, r.ID%7, "an invalid project in a valid-only answer")
			}
		}
	}
	// The Go client; the default k, and valid projects only.
	got, err := a.client.Search(ctx, "waywo", 0)
	require.NoError(t, err)
	require.Len(t, got.Results, 10)

	for _, id := range []int64{5, 6, 40} {
		sim, err := a.client.Similar(ctx, id, 5)
		require.NoError(t, err)
		want, err := searchtest.Exact(ctx, a.path, storedVector(t, a.path, id), 5, true, sim.ModelDigest, id)
		require.NoError(t, err)
		require.Equal(t, hitIDs(want), resultIDs(sim), "similar to %d", id)
		require.NotContains(t, resultIDs(sim), id)
	}
}

func storedVector(t *testing.T, path string, id int64) []float32 {
	t.Helper()
	v, err := embedclient.BlobToVector(blob(t, path, int(id)))
	require.NoError(t, err)
	return v
}

// A changed project is found by its new text right after its sync, and no
// longer by its old one; an invalidated or deleted project is gone after
// the reconcile.
func TestSearchFollowsTheSync(t *testing.T) {
	t.Parallel()
	const n = 300 // more than the index takes its centre from: candidates come from sign bits
	a := startSearchAPI(t, n, map[string]string{"EMBED_RECONCILE_INTERVAL": "300ms"})
	top := func(query string) int64 {
		got, code, body := a.search(fmt.Sprintf(`{"query": %q, "k": 3}`, query))
		require.Equal(t, http.StatusOK, code, body)
		require.NotEmpty(t, got.Results)
		return got.Results[0].ID
	}
	// Texts long enough to outweigh the query instruction's words in the
	// tests' bag-of-words model.
	change := func(text string) {
		before := blob(t, a.path, 12)
		_, err := a.raw.Exec("UPDATE waywo_projects SET description = ? WHERE id = 12", text)
		require.NoError(t, err)
		resp, err := http.Post(a.base+"/projects/12/changed", "", nil)
		require.NoError(t, err)
		resp.Body.Close()
		require.Eventually(t, func() bool { return !bytes.Equal(before, blob(t, a.path, 12)) }, 30*time.Second, 5*time.Millisecond)
	}
	oldText, newText := ollamatest.Sentence(776, 40), ollamatest.Sentence(777, 40)
	change(oldText)
	require.Equal(t, int64(12), top(oldText))
	change(newText)
	require.Equal(t, int64(12), top(newText), "found by its new text as soon as its vector is stored")
	require.NotEqual(t, int64(12), top(oldText), "no longer by its old one")

	_, err := a.raw.Exec("UPDATE waywo_projects SET is_valid_project = 0 WHERE id = 12")
	require.NoError(t, err)
	var gone string
	require.NoError(t, a.raw.QueryRow("SELECT description FROM waywo_projects WHERE id = 13").Scan(&gone))
	_, err = a.raw.Exec("DELETE FROM waywo_projects WHERE id = 13")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return a.status().Search.Rows == n-1 }, 30*time.Second, 20*time.Millisecond, "the reconcile drops the deleted row")
	require.NotEqual(t, int64(12), top(newText), "an invalid project is left out")
	got, code, _ := a.search(fmt.Sprintf(`{"query": %q, "k": 3, "valid_only": false}`, newText))
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, int64(12), got.Results[0].ID, "unless asked for")
	require.NotEqual(t, int64(13), top(gone))

	_, err = a.client.Similar(context.Background(), 13, 5)
	var se *embedclient.StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, http.StatusNotFound, se.StatusCode)
}

// Bad searches get 400, unknown projects 404, and with the sync off both
// routes say so with 404.
func TestSearchErrors(t *testing.T) {
	t.Parallel()
	a := startSearchAPI(t, 3, nil)
	for body, want := range map[string]string{
		`{"query": ""}`:                        "empty",
		`{"query": "  \u200b "}`:               "empty",
		`{}`:                                   "is required",
		`{"query": 5}`:                         "is required",
		`{"query": "rust", "k": 0}`:            "must be a whole number",
		`{"query": "rust", "k": 101}`:          "must be a whole number",
		`{"query": "rust", "k": 2.5}`:          "must be a whole number",
		`{"query": "rust", "valid_only": "x"}`: "must be true or false",
		`[1]`:                                  "JSON object",
	} {
		_, code, raw := a.search(body)
		require.Equal(t, http.StatusBadRequest, code, body)
		require.Contains(t, raw, want, body)
		require.Contains(t, raw, `"code":"bad_request"`)
	}
	for path, want := range map[string]int{
		"/projects/999/similar":             http.StatusNotFound,
		"/projects/1/similar?k=0":           http.StatusBadRequest,
		"/projects/1/similar?k=101":         http.StatusBadRequest,
		"/projects/1/similar?valid_only=no": http.StatusBadRequest,
		"/projects/x/similar":               http.StatusBadRequest,
		"/projects/1/similar?k=2":           http.StatusOK,
	} {
		resp, err := http.Get(a.base + path)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, want, resp.StatusCode, path)
	}
	resp, err := http.Get(a.base + "/search")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	cfg, _ := syncConfig(t, map[string]string{"EMBED_SYNC": "false"})
	off, cancel, done := startRun(t, cfg)
	defer func() { cancel(); require.NoError(t, <-done) }()
	for _, req := range []*http.Request{
		mustRequest(t, http.MethodPost, off+"/search", `{"query": "rust"}`),
		mustRequest(t, http.MethodGet, off+"/projects/1/similar", ""),
	} {
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusNotFound, resp.StatusCode)
		require.Contains(t, string(raw), "EMBED_SYNC=false")
	}
}

func mustRequest(t *testing.T, method, url, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewBufferString(body))
	require.NoError(t, err)
	return req
}
