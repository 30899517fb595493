package httpapi

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/dispatch"
)

// countingBody counts the bytes read from it.
type countingBody struct {
	r    io.Reader
	read atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.read.Add(int64(n))
	return n, err
}

// Requests in flight hold their bytes; one that would take the total past
// the bound is refused at once with 429 and Retry-After — before its body
// is read when Content-Length says so — and holds nothing, so that it
// goes through once the others are done.
func TestInflightBytesAreBounded(t *testing.T) {
	t.Parallel()
	const dims = 16
	release := make(chan struct{})
	started := make(chan struct{}, 8)
	q := fakeQueue(func(ctx context.Context, req dispatch.Request) (dispatch.Result, error) {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return dispatch.Result{}, ctx.Err()
		}
		out := make([][]float32, len(req.Documents))
		for i := range out {
			out[i] = make([]float32, dims)
		}
		return dispatch.Result{Vectors: out}, nil
	})
	limits := Limits{MaxDocuments: 64, MaxDocumentBytes: 1 << 10, MaxBodyBytes: 32 << 10}
	bound := MaxRequestBytes(limits, dims) + 4<<10 // one largest request, and a little
	s := New(q, fixedReadiness{n: 1}, Options{Model: "m", Dims: dims, Limits: limits, RequestTimeout: 10 * time.Second,
		MaxInflightBytes: bound}, zap.NewNop())
	srv := httptest.NewServer(s)
	defer srv.Close()

	docs := make([]string, 64)
	for i := range docs {
		docs[i] = `"` + strings.Repeat("x", 400) + `"`
	}
	large := `{"documents":[` + strings.Join(docs, ",") + `]}`
	post := func(body *countingBody, length int64) (*http.Response, error) {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/embed", body)
		require.NoError(t, err)
		req.ContentLength = length
		req.Header.Set("Expect", "100-continue") // the body follows only when the server reads it
		return http.DefaultClient.Do(req)
	}

	first := make(chan *http.Response, 1)
	go func() {
		resp, err := post(&countingBody{r: strings.NewReader(large)}, int64(len(large)))
		require.NoError(t, err)
		first <- resp
	}()
	<-started // the first holds its body's share and its 64 vectors'

	second := &countingBody{r: strings.NewReader(large)}
	resp, err := post(second, int64(len(large)))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "%s", body)
	require.Equal(t, "1", resp.Header.Get("Retry-After"))
	require.Contains(t, string(body), "EMBED_MAX_INFLIGHT_BYTES")
	require.Contains(t, string(body), `"code":"overloaded"`)
	require.Zero(t, second.read.Load(), "refused before its body was read")

	// A small request fits beside the first.
	small := `{"documents":["a"]}`
	go func() {
		resp, err := post(&countingBody{r: strings.NewReader(small)}, int64(len(small)))
		if err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	close(release)
	resp = <-first
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	resp, err = post(&countingBody{r: strings.NewReader(large)}, int64(len(large)))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "the refused request holds nothing: it goes through now")
	require.Zero(t, s.budget.sem.TryAcquire(bound+1), "nothing leaks")
	require.True(t, s.budget.sem.TryAcquire(bound), "every byte is back")
}

// A client that uploads its body without waiting for 100 Continue reads
// its 429 whole, and its connection serves the next request: the server
// drops the refused body instead of closing the connection under the
// upload, where the client's write would fail with a broken pipe before
// it read the answer (seen once in 600 refusals under load).
func TestRefusedUploadKeepsItsAnswer(t *testing.T) {
	t.Parallel()
	const dims = 16
	q := fakeQueue(func(ctx context.Context, req dispatch.Request) (dispatch.Result, error) {
		out := make([][]float32, len(req.Documents))
		for i := range out {
			out[i] = make([]float32, dims)
		}
		return dispatch.Result{Vectors: out}, nil
	})
	limits := Limits{MaxDocuments: 64, MaxDocumentBytes: 64 << 10, MaxBodyBytes: 4 << 20}
	s := New(q, fixedReadiness{n: 1}, Options{Model: "m", Dims: dims, Limits: limits, RequestTimeout: 10 * time.Second,
		MaxInflightBytes: 1 << 20}, zap.NewNop())
	srv := httptest.NewServer(s)
	defer srv.Close()

	large := `{"documents":["` + strings.Repeat("x", 3<<20) + `"]}` // 4 × 3 MiB: over the bound
	body := &countingBody{r: strings.NewReader(large)}
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/embed", body)
	require.NoError(t, err)
	req.ContentLength = int64(len(large))
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	resp, err := client.Do(req)
	require.NoError(t, err)
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "%s", raw)
	require.Contains(t, string(raw), "EMBED_MAX_INFLIGHT_BYTES")
	require.Empty(t, resp.Header.Get("Connection"), "the connection is kept, not closed under the upload")
	require.Equal(t, int64(len(large)), body.read.Load(), "the client sent its whole body")

	resp, err = client.Post(srv.URL+"/embed", "application/json", strings.NewReader(`{"documents":["a"]}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "the same connection serves the next request")
}
