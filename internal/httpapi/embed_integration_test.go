package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/ollama"
	"github.com/waywo/embed/internal/ollamatest"
)

func TestEmbedCarriesMeaning(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	b.startWorker(workerOptions{})
	b.waitHealth(http.StatusOK)

	docs := []string{
		"a rust web server for hackers",
		"rust web server",
		"garden recipe kitchen",
		"a rust web server for hackers",
	}
	res := b.embed(docs...)
	require.Equal(t, http.StatusOK, res.status, res.Error)
	require.Len(t, res.Embeddings, len(docs))
	for _, v := range res.Embeddings {
		require.Len(t, v, b.ollama.Dims)
	}
	near := ollamatest.Cosine(res.Embeddings[0], res.Embeddings[1])
	far := ollamatest.Cosine(res.Embeddings[0], res.Embeddings[2])
	require.Greater(t, near, far+0.2, "texts sharing words must be closer: near=%.3f far=%.3f", near, far)
	require.Equal(t, res.Embeddings[0], res.Embeddings[3], "the same text must give the same vector")

	// The pipeline returns what the model computes, unchanged by transport.
	ref := b.direct(docs...)
	for i := range docs {
		requireSameVector(t, ref[i], res.Embeddings[i], "document %d", i)
	}

	again := b.embed(docs[0])
	require.Equal(t, http.StatusOK, again.status)
	require.Equal(t, res.Embeddings[0], again.Embeddings[0], "the same text gives the same vector across requests")
}

// 50 clients at once, several documents each: every request succeeds, every
// vector belongs to its own document, and the worker really merged requests
// into shared model calls.
func TestConcurrentRequestsKeepOrderAcrossSharedBatches(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	b.startWorker(workerOptions{batchSize: 64})
	b.waitHealth(http.StatusOK)

	const clients, perClient = 50, 3
	docs := make([][]string, clients)
	var all []string
	for c := range docs {
		for d := range perClient {
			text := ollamatest.Sentence(uint64(c*perClient+d), 12)
			docs[c] = append(docs[c], text)
			all = append(all, text)
		}
	}
	ref := b.direct(all...)

	results := make([]embedResponse, clients)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() { results[c] = b.embed(docs[c]...) })
	}
	wg.Wait()
	for c, res := range results {
		require.Equal(t, http.StatusOK, res.status, "client %d: %s", c, res.Error)
		require.Len(t, res.Embeddings, perClient)
		for d := range perClient {
			requireSameVector(t, ref[c*perClient+d], res.Embeddings[d], "client %d document %d", c, d)
		}
	}

	maxRequests := 0
	for len(b.batches) > 0 {
		bi := <-b.batches
		require.NoError(t, bi.Err)
		maxRequests = max(maxRequests, bi.Requests)
	}
	require.GreaterOrEqual(t, maxRequests, 2, "some model call should carry documents of several requests")
}

// Requests queue before the worker starts, so its first batch holds all of
// them; one has a document the model refuses (over the context length with
// truncation off). That request alone fails, naming the document; its
// batch-mates get their vectors.
func TestBadDocumentFailsOnlyItsOwnRequest(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{readiness: alwaysReady{}})

	tooLong := strings.Repeat("rust ", 600) // the tiny model's context is 512 tokens
	good := []string{ollamatest.Sentence(1, 8), ollamatest.Sentence(2, 8), ollamatest.Sentence(3, 8)}
	type result struct {
		name string
		res  embedResponse
	}
	out := make(chan result, 3)
	go func() { out <- result{"bad", b.embed(good[0], tooLong)} }()
	b.waitQueued(1)
	go func() { out <- result{"mate1", b.embed(good[1])} }()
	b.waitQueued(2)
	go func() { out <- result{"mate2", b.embed(good[2], good[0])} }()
	b.waitQueued(3)

	noTruncate := false
	b.startWorker(workerOptions{batchSize: 64, truncate: &noTruncate})

	got := map[string]embedResponse{}
	for range 3 {
		r := <-out
		got[r.name] = r.res
	}
	require.Equal(t, http.StatusBadRequest, got["bad"].status)
	require.Equal(t, "rejected_by_model", got["bad"].Code)
	require.Contains(t, got["bad"].Error, "document 1")
	require.Contains(t, got["bad"].Error, "context length")

	ref := b.direct(good...)
	require.Equal(t, http.StatusOK, got["mate1"].status, got["mate1"].Error)
	requireSameVector(t, ref[1], got["mate1"].Embeddings[0])
	require.Equal(t, http.StatusOK, got["mate2"].status, got["mate2"].Error)
	requireSameVector(t, ref[2], got["mate2"].Embeddings[0])
	requireSameVector(t, ref[0], got["mate2"].Embeddings[1])

	bi := <-b.batches
	require.Equal(t, 3, bi.Requests, "all three requests shared the first batch")
	require.Greater(t, bi.Calls, 1, "the refused call was split to find the bad document")
}

// The api starts alone: unhealthy and refusing work with a reason. A worker
// started afterwards is picked up; when it stops, health turns 503 again.
func TestHealthFollowsWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})

	status, body := b.health()
	require.Equal(t, http.StatusServiceUnavailable, status)
	require.Equal(t, "unhealthy", body["status"])
	require.Equal(t, false, body["model_loaded"])
	require.Contains(t, body["reason"], "no live worker")
	refused := b.embed("rust web server")
	require.Equal(t, http.StatusServiceUnavailable, refused.status)
	require.Contains(t, refused.Error, "no live worker")

	stop := b.startWorker(workerOptions{})
	body = b.waitHealth(http.StatusOK)
	require.Equal(t, "healthy", body["status"])
	require.Equal(t, true, body["model_loaded"])
	require.EqualValues(t, 1, body["workers"])
	res := b.embed("rust web server")
	require.Equal(t, http.StatusOK, res.status, res.Error)

	// The served vector space's fingerprint: the model's digest as that
	// Ollama lists it, and its version; /v1/models shows the digest too.
	u, err := url.Parse(b.ollama.URL)
	require.NoError(t, err)
	list, err := ollama.NewClient(u).List(context.Background())
	require.NoError(t, err)
	digest := ""
	for _, m := range list.Models {
		if m.Name == b.ollama.Model+":latest" {
			digest = m.Digest
		}
	}
	require.NotEmpty(t, digest)
	require.Equal(t, digest, body["model_digest"])
	require.NotEmpty(t, body["ollama_version"])
	resp, err := http.Get(b.url + "/v1/models/" + b.ollama.Model)
	require.NoError(t, err)
	var model map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&model))
	resp.Body.Close()
	require.Equal(t, digest, model["digest"])

	stop()
	body = b.waitHealth(http.StatusServiceUnavailable)
	require.Contains(t, body["reason"], "no live worker")
}

// A worker that vanishes without saying goodbye (its connection cut, as
// when killed) is counted gone once its heartbeats stop.
func TestHealthNoticesASilentWorker(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	b.startWorker(workerOptions{})
	b.waitHealth(http.StatusOK)

	// Close the worker's connection under it, as a kill -9 would: no
	// goodbye is sent and the heartbeats stop.
	b.workerConns[0].Close()
	body := b.waitHealth(http.StatusServiceUnavailable)
	require.Contains(t, fmt.Sprint(body["reason"]), "no live worker")
}

func TestRequestTimesOutWith504(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{readiness: alwaysReady{}, requestTimeout: 200 * time.Millisecond})
	start := time.Now()
	res := b.embed("nobody will answer this")
	require.Equal(t, http.StatusGatewayTimeout, res.status)
	require.Equal(t, "timeout", res.Code)
	require.Less(t, time.Since(start), 5*time.Second, "a request never hangs past its timeout")

	// A worker that starts later finds the expired job and drops it without harm.
	b.startWorker(workerOptions{})
	b.waitQueued(0)
}
