package ollama_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/engine"
	"github.com/waywo/embed/internal/ollama"
	"github.com/waywo/embed/internal/ollamatest"
)

func TestMain(m *testing.M) { ollamatest.RunTests(m) }

func realModel(t *testing.T, mutate func(*ollama.Options)) (*ollama.Endpoint, *api.Client, *ollamatest.Server) {
	t.Helper()
	ol := ollamatest.Shared(t)
	u, err := url.Parse(ol.URL)
	require.NoError(t, err)
	opts := ollama.Options{Model: ol.Model, Dims: ol.Dims, MaxBatch: 8, Timeout: 30 * time.Second, KeepAlive: -1, Truncate: true}
	if mutate != nil {
		mutate(&opts)
	}
	return ollama.NewEndpoint(u, opts), ollama.NewClient(u), ol
}

func TestPrepareChecksModelAndDimensions(t *testing.T) {
	t.Parallel()
	m, _, _ := realModel(t, nil)
	require.NoError(t, m.Prepare(context.Background()))
	require.NotEmpty(t, m.Fingerprint().Digest, "Prepare records the model's digest")
	require.NotEmpty(t, m.Fingerprint().OllamaVersion)
	_, err := m.Probe(context.Background(), true)
	require.NoError(t, err)
	_, err = m.Probe(context.Background(), false)
	require.NoError(t, err)

	// A length other than EMBED_DIMENSIONS is refused from the model's
	// metadata, before any embedding.
	wrong, _, _ := realModel(t, func(o *ollama.Options) { o.Dims = 4096 })
	err = wrong.Prepare(context.Background())
	require.ErrorIs(t, err, ollama.ErrModelUnfit)
	require.ErrorContains(t, err, "bert.embedding_length is 384")
	require.ErrorContains(t, err, "EMBED_DIMENSIONS is 4096")
}

func TestPrepareNamesAMissingModelAndTheHost(t *testing.T) {
	t.Parallel()
	m, _, ol := realModel(t, func(o *ollama.Options) { o.Model = "no-such-model" })
	err := m.Prepare(context.Background())
	require.ErrorIs(t, err, engine.ErrModelNotFound)
	require.ErrorContains(t, err, `"no-such-model"`)
	require.ErrorContains(t, err, ol.URL)
	require.ErrorContains(t, err, "EMBED_PULL")
	_, err = m.Probe(context.Background(), true)
	require.ErrorIs(t, err, engine.ErrModelNotFound)
}

func TestPrepareNamesAnUnreachableOllama(t *testing.T) {
	t.Parallel()
	u, _ := url.Parse("http://127.0.0.1:1")
	m := ollama.NewEndpoint(u, ollama.Options{Model: "x", Dims: 4, Timeout: time.Second})
	err := m.Prepare(context.Background())
	require.ErrorIs(t, err, engine.ErrUnavailable)
	require.ErrorContains(t, err, "cannot reach Ollama at http://127.0.0.1:1")
}

// With truncation off, a real Ollama refuses an input over the context
// length and fails the whole call; EmbedAll finds the culprit and still
// returns its neighbours' vectors.
func TestEmbedAllIsolatesARejectedInputInRealOllama(t *testing.T) {
	t.Parallel()
	m, client, ol := realModel(t, func(o *ollama.Options) { o.Truncate = false })
	inputs := []string{"rust web", "garden", "kitchen recipe", strings.Repeat("word ", 600), "music synth", "a b c"}
	out, err := m.EmbedAll(context.Background(), inputs)
	require.NoError(t, err)
	require.ErrorIs(t, out.Rejected[3], engine.ErrRejected)
	require.ErrorContains(t, out.Rejected[3], "context length")
	require.Nil(t, out.Vectors[3])
	require.Greater(t, out.Calls, 1)

	good := []string{inputs[0], inputs[1], inputs[2], inputs[4], inputs[5]}
	ref, err := client.Embed(context.Background(), &api.EmbedRequest{Model: ol.Model, Input: good})
	require.NoError(t, err)
	for i, j := range []int{0, 1, 2, 4, 5} {
		require.Nil(t, out.Rejected[j])
		require.InDelta(t, 1.0, ollamatest.Cosine(ref.Embeddings[i], out.Vectors[j]), 1e-6)
	}
	require.Positive(t, out.Tokens)
}

// fakeURL names a stand-in endpoint.
func fakeURL(host string) *url.URL { return &url.URL{Scheme: "http", Host: host} }

type fakeClient func(req *api.EmbedRequest) (*api.EmbedResponse, error)

func (f fakeClient) Embed(_ context.Context, req *api.EmbedRequest) (*api.EmbedResponse, error) {
	return f(req)
}

func TestEmbedAllChunksAndBisects(t *testing.T) {
	t.Parallel()
	var sizes []int
	client := fakeClient(func(req *api.EmbedRequest) (*api.EmbedResponse, error) {
		in := req.Input.([]string)
		sizes = append(sizes, len(in))
		out := &api.EmbedResponse{}
		for _, s := range in {
			if s == "bad" {
				return nil, api.StatusError{StatusCode: http.StatusBadRequest, ErrorMessage: "input length exceeds maximum context length"}
			}
			out.Embeddings = append(out.Embeddings, []float32{float32(len(s)), 0})
		}
		return out, nil
	})
	m := ollama.NewEndpoint(fakeURL("fake"), ollama.Options{Model: "m", Dims: 2, MaxBatch: 4, Timeout: time.Second, Embedder: client})
	out, err := m.EmbedAll(context.Background(), []string{"a", "bb", "ccc", "bad", "eeeee", "ffffff"})
	require.NoError(t, err)
	// Chunk 1 (4 inputs) fails, halves [a bb] ok, [ccc bad] fails, [ccc] ok,
	// [bad] fails; chunk 2 (2 inputs) ok.
	require.Equal(t, []int{4, 2, 2, 1, 1, 2}, sizes)
	require.Equal(t, 6, out.Calls)
	require.Error(t, out.Rejected[3])
	for i, want := range []float32{1, 2, 3, 0, 5, 6} {
		if i == 3 {
			continue
		}
		require.Equal(t, []float32{want, 0}, out.Vectors[i])
	}

	// A server error is not the input's fault: nothing is bisected.
	sizes = nil
	down := ollama.NewEndpoint(fakeURL("fake"), ollama.Options{Model: "m", Dims: 2, MaxBatch: 4, Timeout: time.Second, Embedder: fakeClient(func(req *api.EmbedRequest) (*api.EmbedResponse, error) {
		sizes = append(sizes, 1)
		return nil, api.StatusError{StatusCode: http.StatusInternalServerError, ErrorMessage: "oom"}
	})})
	_, err = down.EmbedAll(context.Background(), []string{"a", "b"})
	require.ErrorIs(t, err, engine.ErrUnavailable)
	require.Len(t, sizes, 1)

	nan := ollama.NewEndpoint(fakeURL("fake"), ollama.Options{Model: "m", Dims: 2, MaxBatch: 4, Timeout: time.Second, Embedder: fakeClient(func(req *api.EmbedRequest) (*api.EmbedResponse, error) {
		return &api.EmbedResponse{Embeddings: [][]float32{{float32(0) / float32(zero()), 1}}}, nil
	})})
	_, err = nan.EmbedAll(context.Background(), []string{"a"})
	require.ErrorIs(t, err, engine.ErrUnavailable)
	require.ErrorContains(t, err, "non-finite")

	missing := ollama.NewEndpoint(fakeURL("fake"), ollama.Options{Model: "m", Dims: 2, MaxBatch: 4, Timeout: time.Second, Embedder: fakeClient(func(*api.EmbedRequest) (*api.EmbedResponse, error) {
		return nil, api.StatusError{StatusCode: http.StatusNotFound, ErrorMessage: `model "m" not found`}
	})})
	_, err = missing.EmbedAll(context.Background(), []string{"a"})
	require.True(t, errors.Is(err, engine.ErrModelNotFound))
}

func zero() float32 { return 0 }

// The fast embedder and Ollama's own client agree on replies and errors.
func TestOllamaEmbedderMatchesOllamasClient(t *testing.T) {
	t.Parallel()
	_, client, ol := realModel(t, nil)
	u, _ := url.Parse(ol.URL)
	fast := ollama.NewEmbedClient(u, ollama.NewHTTPClient())
	req := &api.EmbedRequest{Model: ol.Model, Input: []string{"rust web", "garden"}}
	want, err := client.Embed(context.Background(), req)
	require.NoError(t, err)
	got, err := fast.Embed(context.Background(), req)
	require.NoError(t, err)
	require.Equal(t, want.Embeddings, got.Embeddings)
	require.Equal(t, want.PromptEvalCount, got.PromptEvalCount)

	noTrunc := false
	bad := &api.EmbedRequest{Model: ol.Model, Input: []string{strings.Repeat("word ", 600)}, Truncate: &noTrunc}
	_, wantErr := client.Embed(context.Background(), bad)
	_, gotErr := fast.Embed(context.Background(), bad)
	var we, ge api.StatusError
	require.ErrorAs(t, wantErr, &we)
	require.ErrorAs(t, gotErr, &ge)
	require.Equal(t, we, ge)

	_, gotErr = fast.Embed(context.Background(), &api.EmbedRequest{Model: "missing", Input: []string{"x"}})
	require.ErrorAs(t, gotErr, &ge)
	require.Equal(t, http.StatusNotFound, ge.StatusCode)
}
