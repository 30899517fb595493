package system

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/embedclient"
	"github.com/waywo/embed/internal/httpapi"
	"github.com/waywo/embed/internal/projectsync"
	"github.com/waywo/embed/internal/search"
)

// The index's errors reach the HTTP API as the errors it maps to 404 and
// 503, their reasons kept; a result becomes the wire answer unchanged.
func TestSearchAnswer(t *testing.T) {
	for err, want := range map[error]error{
		fmt.Errorf("%w: project 3 has no vector yet", search.ErrNotFound): httpapi.ErrNotFound,
		fmt.Errorf("%w: 120 rows so far", search.ErrLoading):              httpapi.ErrUnavailable,
		fmt.Errorf("%w: WAYWO_DB is gone", search.ErrUnreadable):          httpapi.ErrUnavailable,
		fmt.Errorf("%w: cannot open WAYWO_DB", projectsync.ErrNotRunning): httpapi.ErrUnavailable,
	} {
		_, got := answer(search.Result{}, err)
		require.ErrorIs(t, got, want)
		require.ErrorContains(t, got, err.Error())
	}
	boom := errors.New("boom")
	_, got := answer(search.Result{}, boom)
	require.Equal(t, boom, got)

	out, err := answer(search.Result{Hits: []search.Hit{{ID: 7, Score: 0.5, Title: "seven"}}, Digest: "d", Searched: 10, Stale: 2, Rescored: 10}, nil)
	require.NoError(t, err)
	require.Equal(t, embedclient.SearchResponse{Results: []embedclient.SearchResult{{ID: 7, Score: 0.5, Title: "seven"}},
		ModelDigest: "d", Searched: 10, Stale: 2, Rescored: 10}, out)
}
