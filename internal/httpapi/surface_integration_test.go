package httpapi_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/embedclient"
	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/prompt"
)

const queryTask = "Given a question, retrieve passages that answer the question"

// Queries reach the model with nemotron's instruction prefix; documents go
// unchanged, so their vectors are the model's vectors of the bare text.
func TestQueryPrefixReachesTheModel(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	b.startWorker(workerOptions{})
	b.waitHealth(http.StatusOK)

	text := "rust web server"
	doc := b.post("/embed", "application/json", []byte(`{"documents":["rust web server"]}`))
	require.Equal(t, http.StatusOK, doc.status, doc.Error)
	query := b.post("/embed", "application/json", []byte(`{"documents":["rust web server"],"input_type":"query"}`))
	require.Equal(t, http.StatusOK, query.status, query.Error)

	ref := b.direct(text, prompt.Query(queryTask, text))
	requireSameVector(t, ref[0], doc.Embeddings[0], "a document is embedded as is")
	requireSameVector(t, ref[1], query.Embeddings[0], "a query carries the instruction")
	require.Less(t, ollamatest.Cosine(doc.Embeddings[0], query.Embeddings[0]), 0.999, "the prefix changes the vector")
}

// Identical texts, within a request or across requests, cost one model
// input; query and document of one text are different entries.
func TestCacheSavesModelCalls(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{cacheSize: 100})
	b.startWorker(workerOptions{})
	b.waitHealth(http.StatusOK)
	base := b.modelInputs.Load() // the worker's warm-up is not ours

	first := b.embed("alpha rust", "beta garden", "alpha rust")
	require.Equal(t, http.StatusOK, first.status, first.Error)
	require.EqualValues(t, 2, b.modelInputs.Load()-base, "a repeat within a request is embedded once")
	require.Equal(t, first.Embeddings[0], first.Embeddings[2])

	second := b.embed("beta garden", "alpha rust")
	require.Equal(t, http.StatusOK, second.status)
	require.EqualValues(t, 2, b.modelInputs.Load()-base, "repeats across requests come from the cache")
	require.Equal(t, first.Embeddings[1], second.Embeddings[0])
	require.Equal(t, first.Embeddings[0], second.Embeddings[1])

	q := b.post("/embed", "application/json", []byte(`{"documents":["alpha rust"],"input_type":"query"}`))
	require.Equal(t, http.StatusOK, q.status)
	require.EqualValues(t, 3, b.modelInputs.Load()-base, "a query is not answered with the document's vector")

	families := b.scrape()
	require.Equal(t, 2.0, sample(families, "embed_cache_lookups_total", map[string]string{"result": "hit"}))
	require.Equal(t, 4.0, sample(families, "embed_cache_lookups_total", map[string]string{"result": "miss"}))
}

func TestOpenAIClientAgainstTheServer(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	b.startWorker(workerOptions{})
	b.waitHealth(http.StatusOK)
	client := openai.NewClient(option.WithBaseURL(b.url+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	ctx := context.Background()
	texts := []string{"rust web server", "garden recipe kitchen"}
	ref := b.direct(texts...)

	resp, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: b.ollama.Model,
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: texts},
	})
	require.NoError(t, err)
	require.Equal(t, b.ollama.Model, resp.Model)
	require.Len(t, resp.Data, 2)
	for i, d := range resp.Data {
		require.EqualValues(t, i, d.Index)
		require.Len(t, d.Embedding, b.ollama.Dims)
		requireSameVector(t, ref[i], toFloat32(d.Embedding))
	}
	require.Positive(t, resp.Usage.PromptTokens, "token counts come from Ollama's prompt_eval_count")
	require.Equal(t, resp.Usage.PromptTokens, resp.Usage.TotalTokens)

	one, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model:          b.ollama.Model,
		Input:          openai.EmbeddingNewParamsInputUnion{OfString: openai.String(texts[1])},
		EncodingFormat: openai.EmbeddingNewParamsEncodingFormatBase64,
		Dimensions:     openai.Int(int64(b.ollama.Dims)),
	})
	require.NoError(t, err)
	require.Len(t, one.Data, 1)
	require.True(t, strings.HasPrefix(one.Data[0].JSON.Embedding.Raw(), `"`), "base64 was sent")
	require.Equal(t, toFloat32(resp.Data[1].Embedding), toFloat32(one.Data[0].Embedding), "base64 carries the exact float32 values")

	_, err = client.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: b.ollama.Model, Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")},
		Dimensions: openai.Int(256),
	})
	var apiErr *openai.Error
	require.True(t, errors.As(err, &apiErr), "%v", err)
	require.Equal(t, http.StatusBadRequest, apiErr.StatusCode)
	require.Equal(t, "dimensions", apiErr.Param)
	require.Equal(t, "invalid_request_error", apiErr.Type)

	_, err = client.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: openai.EmbeddingModelTextEmbedding3Small, Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")},
	})
	require.True(t, errors.As(err, &apiErr), "%v", err)
	require.Equal(t, http.StatusNotFound, apiErr.StatusCode)
	require.Equal(t, "model_not_found", apiErr.Code)

	_, err = client.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: b.ollama.Model, Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfTokens: []int64{1, 2, 3}},
	})
	require.True(t, errors.As(err, &apiErr), "%v", err)
	require.Equal(t, http.StatusBadRequest, apiErr.StatusCode)
	require.Contains(t, apiErr.Message, "token arrays are not supported")
}

func TestMetricsMoveWithTraffic(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	b.startWorker(workerOptions{})
	b.waitHealth(http.StatusOK)

	for range 3 {
		res := b.embed("rust web", "garden kitchen")
		require.Equal(t, http.StatusOK, res.status)
	}
	bad := b.post("/embed", "application/json", []byte(`{"documents":[]}`))
	require.Equal(t, http.StatusBadRequest, bad.status)

	m := b.scrape()
	require.Equal(t, 3.0, sample(m, "embed_http_requests_total", map[string]string{"route": "POST /embed", "code": "200"}))
	require.Equal(t, 1.0, sample(m, "embed_http_requests_total", map[string]string{"route": "POST /embed", "code": "400"}))
	require.Equal(t, 1.0, sample(m, "embed_http_errors_total", map[string]string{"kind": "bad_request"}))
	require.Equal(t, 6.0, sample(m, "embed_documents_total", map[string]string{"input_type": "document"}))
	require.Equal(t, 1.0, sample(m, "embed_workers_live", nil))
	require.Equal(t, 1.0, sample(m, "embed_workers_ready", nil))
	require.Equal(t, 1.0, sample(m, "embed_queue_up", nil))
	require.Equal(t, 0.0, sample(m, "embed_queue_messages", nil))
	require.GreaterOrEqual(t, histCount(m, "embed_http_request_duration_seconds"), uint64(4))
	require.GreaterOrEqual(t, histCount(m, "embed_batch_documents"), uint64(3))
	require.GreaterOrEqual(t, histCount(m, "embed_model_call_duration_seconds"), uint64(3))
	require.Positive(t, sample(m, "embed_model_tokens_total", nil))
	require.Equal(t, 6.0, sample(m, "embed_model_documents_total", nil))
	require.Positive(t, sample(m, "embed_batch_flushes_total", map[string]string{"reason": "drain"}))
}

func toFloat32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, f := range v {
		out[i] = float32(f)
	}
	return out
}

func (b *bundle) scrape() map[string]*dto.MetricFamily {
	b.t.Helper()
	resp, err := http.Get(b.url + "/metrics")
	require.NoError(b.t, err)
	defer resp.Body.Close()
	require.Equal(b.t, http.StatusOK, resp.StatusCode)
	raw, err := io.ReadAll(resp.Body)
	require.NoError(b.t, err)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(raw)))
	require.NoError(b.t, err)
	return families
}

// sample returns the value of the series of family name whose labels
// include want; 0 when there is none.
func sample(families map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f, ok := families[name]
	if !ok {
		return 0
	}
	for _, m := range f.GetMetric() {
		if !hasLabels(m.GetLabel(), want) {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func histCount(families map[string]*dto.MetricFamily, name string) uint64 {
	var n uint64
	if f, ok := families[name]; ok {
		for _, m := range f.GetMetric() {
			n += m.GetHistogram().GetSampleCount()
		}
	}
	return n
}

func hasLabels(labels []*dto.LabelPair, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, l := range labels {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// The Go client against the real server: vectors, queries, health, typed
// errors.
func TestGoClientAgainstTheServer(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	c := embedclient.New(b.url, embedclient.WithRetries(3, time.Millisecond))
	ctx := context.Background()

	h, err := c.Health(ctx)
	var se *embedclient.StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, http.StatusServiceUnavailable, se.StatusCode)
	require.Equal(t, "unhealthy", h.Status)
	require.Contains(t, h.Reason, "no live worker")

	b.startWorker(workerOptions{})
	b.waitHealth(http.StatusOK)
	h, err = c.Health(ctx)
	require.NoError(t, err)
	require.True(t, h.ModelLoaded)
	require.Equal(t, b.ollama.Dims, h.Dimensions)

	text := embedclient.ProjectText("Waywo", "a rust web server", []string{"rust", "web"})
	vs, err := c.Embed(ctx, []string{text, "garden kitchen"})
	require.NoError(t, err)
	ref := b.direct(text, "garden kitchen", prompt.Query(queryTask, "rust server"))
	requireSameVector(t, ref[0], vs[0])
	requireSameVector(t, ref[1], vs[1])

	one, err := c.EmbedOne(ctx, text)
	require.NoError(t, err)
	require.Equal(t, vs[0], one)
	blob := embedclient.VectorToBlob(one)
	require.Len(t, blob, 4*b.ollama.Dims)
	back, err := embedclient.BlobToVector(blob)
	require.NoError(t, err)
	require.Equal(t, one, back)

	qs, err := c.EmbedQueries(ctx, []string{"rust server"})
	require.NoError(t, err)
	requireSameVector(t, ref[2], qs[0])

	_, err = c.Embed(ctx, []string{"fine", " "})
	require.ErrorAs(t, err, &se)
	require.Equal(t, http.StatusBadRequest, se.StatusCode)
	require.Equal(t, "bad_request", se.Code)
	require.Contains(t, se.Message, "documents[1] is empty")
}
