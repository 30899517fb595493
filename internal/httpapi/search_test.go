package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/waywo/embed/embedclient"
	"github.com/waywo/embed/internal/dispatch"
)

// projectsWith is a sync whose searches all fail with err.
type projectsWith struct{ err error }

func (p projectsWith) Changed(context.Context, int64) error { return p.err }
func (p projectsWith) Status(context.Context, embedclient.Page) (embedclient.SyncStatus, error) {
	return embedclient.SyncStatus{}, p.err
}
func (p projectsWith) Search(context.Context, []float32, int, bool) (embedclient.SearchResponse, error) {
	return embedclient.SearchResponse{}, p.err
}
func (p projectsWith) Similar(context.Context, int64, int, bool) (embedclient.SearchResponse, error) {
	return embedclient.SearchResponse{}, p.err
}

// While the index loads, or the file cannot be read, both search routes
// answer 503 with the reason; a project without a vector is 404.
func TestSearchUnavailable(t *testing.T) {
	t.Parallel()
	q := fakeQueue(func(ctx context.Context, req dispatch.Request) (dispatch.Result, error) {
		return dispatch.Result{Vectors: [][]float32{{1, 0, 0, 0}}}, nil
	})
	for err, want := range map[error]int{
		fmt.Errorf("%w: the search index is loading: 120 rows so far", ErrUnavailable): http.StatusServiceUnavailable,
		fmt.Errorf("%w: the project sync is not running", ErrUnavailable):              http.StatusServiceUnavailable,
		fmt.Errorf("%w: project 3 has no vector yet", ErrNotFound):                     http.StatusNotFound,
		errors.New("boom"): http.StatusInternalServerError,
	} {
		s := New(q, fixedReadiness{n: 1}, Options{Model: "m", Dims: 4, Limits: Limits{MaxDocuments: 8, MaxDocumentBytes: 1 << 10, MaxBodyBytes: 1 << 16},
			RequestTimeout: 5 * time.Second, Projects: projectsWith{err}}, zap.NewNop())
		srv := httptest.NewServer(s)
		for _, req := range []*http.Request{
			httptest.NewRequest(http.MethodPost, srv.URL+"/search", strings.NewReader(`{"query": "rust"}`)),
			httptest.NewRequest(http.MethodGet, srv.URL+"/projects/3/similar", nil),
		} {
			req.RequestURI = ""
			resp, err2 := http.DefaultClient.Do(req)
			require.NoError(t, err2)
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.Equal(t, want, resp.StatusCode, "%v: %s", err, raw)
			if want == http.StatusServiceUnavailable {
				require.Equal(t, "1", resp.Header.Get("Retry-After"))
				require.Contains(t, string(raw), strings.SplitN(err.Error(), ":", 2)[1])
			}
		}
		srv.Close()
	}
}
