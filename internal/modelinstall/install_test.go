package modelinstall_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/waywo/embed/internal/modelinstall"
	"github.com/waywo/embed/internal/ollama"
	"github.com/waywo/embed/internal/ollamatest"
)

type installEnv struct {
	ol     *ollamatest.Server
	base   *url.URL
	client *api.Client
	dir    string
}

func newInstallEnv(t *testing.T) installEnv {
	t.Helper()
	ol := ollamatest.Shared(t)
	u, err := url.Parse(ol.URL)
	require.NoError(t, err)
	return installEnv{ol: ol, base: u, client: ollama.NewClient(u), dir: t.TempDir()}
}

func (e installEnv) options(model, source string, dims int) (modelinstall.Options, *observer.ObservedLogs) {
	core, logs := observer.New(zap.InfoLevel)
	return modelinstall.Options{
		Ollama: e.base, Model: model, Dims: dims, Context: 512, Source: source,
		WorkDir: filepath.Join(e.dir, "work"), Timeout: 2 * time.Minute, Progress: io.Discard, Log: zap.New(core),
	}, logs
}

func (e installEnv) show(t *testing.T, model string) *api.ShowResponse {
	t.Helper()
	s, err := e.client.Show(context.Background(), &api.ShowRequest{Model: model})
	require.NoError(t, err)
	return s
}

// model makes an Endpoint for the worker's warm-up.
func (e installEnv) model(name string, dims int) *ollama.Endpoint {
	return ollama.NewEndpoint(e.base, ollama.Options{
		Model: name, Dims: dims, MaxBatch: 1, Timeout: time.Minute, KeepAlive: -1, Truncate: true,
	})
}

// The test Ollama (v0.10.1) stores a llama-embed model but cannot load it:
// the install uploads, creates and checks it, then reports the refusal of
// the warm-up, naming the release it needs. The created model reads back
// exactly as prepared.
func TestInstallLlamaEmbedIntoAnOllamaTooOldToLoadIt(t *testing.T) {
	t.Parallel()
	e := newInstallEnv(t)
	ctx := context.Background()
	// Its own weights: a blob of its own, whatever the other tests upload.
	src, _ := tinyLlamaEmbedFile(t, e.dir, func(m *ollamatest.TinyLlamaEmbed) { m.Seed = 7 })
	o, logs := e.options("tiny-llama-embed", src, 64)
	_, err := modelinstall.Install(ctx, o)
	require.ErrorIs(t, err, ollama.ErrModelUnfit)
	require.ErrorContains(t, err, "could not load model \"tiny-llama-embed\"")
	require.ErrorContains(t, err, "the llama-embed architecture needs Ollama v0.30.0 or later")
	require.NotEmpty(t, logs.FilterMessage("uploaded the model file").All())
	require.NotEmpty(t, logs.FilterMessage("model created").All())

	show := e.show(t, "tiny-llama-embed")
	served, err := ollama.CheckServed(show, "tiny-llama-embed", e.ol.URL, 64)
	require.NoError(t, err, "the created model passes the metadata checks")
	require.Equal(t, "llama-embed", served.Architecture)
	require.Contains(t, served.Capabilities, "embedding")
	require.Equal(t, 512, served.NumCtx)
	require.Equal(t, 512, served.NumBatch)
	require.Equal(t, float64(1), show.ModelInfo["llama-embed.pooling_type"])
	require.Equal(t, false, show.ModelInfo["llama-embed.attention.causal"])
	matches, _ := filepath.Glob(filepath.Join(o.WorkDir, "*.prepared.gguf"))
	require.Len(t, matches, 1, "after a failure the prepared copy stays for the next run")

	// Run again: the model is there and fit, so nothing is uploaded; the
	// warm-up still says why it cannot serve.
	o2, logs2 := e.options("tiny-llama-embed", src, 64)
	_, err = modelinstall.Install(ctx, o2)
	require.ErrorContains(t, err, "needs Ollama v0.30.0 or later")
	require.NotEmpty(t, logs2.FilterMessage("model already installed; checking it serves").All())
	require.Empty(t, logs2.FilterMessage("uploaded the model file").All())
	require.Empty(t, logs2.FilterMessage("model created").All())
}

// Each warm-up verdict, against what that real Ollama's /api/show says:
// the prepared llama-embed passes the metadata checks and fails to load
// (naming the release); the unprepared one is refused for the missing keys
// and the missing embedding capability (Ollama would answer 501); the tiny
// BERT serves.
func TestWarmUpVerdicts(t *testing.T) {
	t.Parallel()
	e := newInstallEnv(t)
	ctx := context.Background()

	// Unprepared: created straight from the converter's layout.
	_, raw := tinyLlamaEmbedFile(t, e.dir, nil)
	sum := sha256.Sum256(raw)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	require.NoError(t, e.client.CreateBlob(ctx, digest, bytes.NewReader(raw)))
	require.NoError(t, e.client.Create(ctx, &api.CreateRequest{Model: "unprepared-llama-embed", Files: map[string]string{"model.gguf": digest}},
		func(api.ProgressResponse) error { return nil }))
	show := e.show(t, "unprepared-llama-embed")
	require.NotContains(t, show.Capabilities, "embedding")
	_, err := ollama.CheckServed(show, "unprepared-llama-embed", e.ol.URL, 64)
	require.ErrorIs(t, err, ollama.ErrModelUnfit)
	for _, want := range []string{
		"llama-embed.pooling_type is not set", "llama-embed.attention.causal is not set",
		"no embedding capability", `would answer 501 "this server does not support embeddings"`, "run `api model install`",
	} {
		require.ErrorContains(t, err, want)
	}
	err = e.model("unprepared-llama-embed", 64).Prepare(ctx)
	require.ErrorIs(t, err, ollama.ErrModelUnfit, "the worker refuses it before any job")
	require.ErrorContains(t, err, "llama-embed.pooling_type is not set")

	// Prepared.
	out := filepath.Join(e.dir, "prepared.gguf")
	src, _ := tinyLlamaEmbedFile(t, t.TempDir(), nil)
	p, err := modelinstall.PrepareFile(src, out, 64)
	require.NoError(t, err)
	prepared, err := os.Open(out)
	require.NoError(t, err)
	defer prepared.Close()
	require.NoError(t, e.client.CreateBlob(ctx, p.Digest, prepared))
	require.NoError(t, e.client.Create(ctx, &api.CreateRequest{Model: "prepared-llama-embed", Files: map[string]string{"model.gguf": p.Digest}},
		func(api.ProgressResponse) error { return nil }))
	_, err = ollama.CheckServed(e.show(t, "prepared-llama-embed"), "prepared-llama-embed", e.ol.URL, 64)
	require.NoError(t, err)
	_, err = ollama.CheckServed(e.show(t, "prepared-llama-embed"), "prepared-llama-embed", e.ol.URL, 4096)
	require.ErrorContains(t, err, "llama-embed.embedding_length is 64, EMBED_DIMENSIONS is 4096")
	err = e.model("prepared-llama-embed", 64).Prepare(ctx)
	require.ErrorIs(t, err, ollama.ErrModelUnfit)
	require.ErrorContains(t, err, "the llama-embed architecture needs Ollama v0.30.0 or later")

	// The tiny BERT every other test embeds with.
	served, err := ollama.CheckServed(e.show(t, e.ol.Model), e.ol.Model, e.ol.URL, e.ol.Dims)
	require.NoError(t, err)
	require.Equal(t, "bert", served.Architecture)
	m := e.model(e.ol.Model, e.ol.Dims)
	require.NoError(t, m.Prepare(ctx))
	require.NotEmpty(t, m.Fingerprint().Digest)
}

// A model Ollama can load installs end to end, then a second run does
// nothing but the warm-up, and a new EMBED_CONTEXT re-creates it without
// uploading the file again.
func TestInstallIsIdempotent(t *testing.T) {
	t.Parallel()
	e := newInstallEnv(t)
	ctx := context.Background()
	tb := ollamatest.DefaultTinyBERT()
	tb.Words = tb.Words[:200]
	var buf bytes.Buffer
	require.NoError(t, tb.WriteGGUF(&buf))
	src := filepath.Join(e.dir, "bert.gguf")
	require.NoError(t, os.WriteFile(src, buf.Bytes(), 0o444))

	o, logs := e.options("installed-bert", src, tb.Dims)
	res, err := modelinstall.Install(ctx, o)
	require.NoError(t, err)
	require.False(t, res.AlreadyInstalled)
	require.Empty(t, res.Prepared.Changes, "a bert with pooling serves as it is")
	require.NotEmpty(t, res.Fingerprint.Digest)
	require.NotEmpty(t, logs.FilterMessage("uploaded the model file").All())
	require.FileExists(t, src, "a local source is never removed")

	o2, logs2 := e.options("installed-bert", src, tb.Dims)
	res2, err := modelinstall.Install(ctx, o2)
	require.NoError(t, err)
	require.True(t, res2.AlreadyInstalled)
	require.Equal(t, res.Fingerprint, res2.Fingerprint)
	require.Empty(t, logs2.FilterMessage("model created").All())

	// A new EMBED_CONTEXT: the parameters change over the same weights,
	// with no source needed and nothing uploaded.
	o3, logs3 := e.options("installed-bert", "", tb.Dims)
	o3.Context = 256
	res3, err := modelinstall.Install(ctx, o3)
	require.NoError(t, err)
	require.False(t, res3.AlreadyInstalled)
	require.NotEmpty(t, logs3.FilterMessage("setting the model's parameters").All())
	require.Empty(t, logs3.FilterMessage("uploaded the model file").All())
	require.NotEqual(t, res.Fingerprint.Digest, res3.Fingerprint.Digest, "new parameters, new digest")
	served, err := ollama.CheckServed(e.show(t, "installed-bert"), "installed-bert", e.ol.URL, tb.Dims)
	require.NoError(t, err)
	require.Equal(t, 256, served.NumCtx)
	require.Equal(t, 256, served.NumBatch)

	// --force installs again from the source; Ollama has the file already.
	o5, logs5 := e.options("installed-bert", src, tb.Dims)
	o5.Force = true
	_, err = modelinstall.Install(ctx, o5)
	require.NoError(t, err)
	require.NotEmpty(t, logs5.FilterMessage("Ollama already holds the model file").All())
	require.NotEmpty(t, logs5.FilterMessage("model created").All())

	// No source and no model: a clear error.
	o4, _ := e.options("never-installed", "", tb.Dims)
	_, err = modelinstall.Install(ctx, o4)
	require.ErrorContains(t, err, "EMBED_MODEL_SOURCE is empty")
}

// A worker's readiness probe notices a model replaced under it: a new
// digest is checked again before it is taken, and one that would serve
// wrong vectors makes the endpoint not ready.
func TestProbeNoticesAReplacedModel(t *testing.T) {
	t.Parallel()
	e := newInstallEnv(t)
	ctx := context.Background()
	copyOf := func(from string) {
		require.NoError(t, e.client.Copy(ctx, &api.CopyRequest{Source: from, Destination: "swapped"}))
	}
	copyOf(e.ol.Model)
	m := e.model("swapped", e.ol.Dims)
	require.NoError(t, m.Prepare(ctx))
	first := m.Fingerprint()
	before, err := m.Probe(ctx, false)
	require.NoError(t, err)
	require.Equal(t, first, before)

	// Re-created with another parameter: another digest, still fit.
	require.NoError(t, e.client.Create(ctx, &api.CreateRequest{Model: "swapped", From: e.ol.Model, Parameters: map[string]any{"num_ctx": 256}},
		func(api.ProgressResponse) error { return nil }))
	_, err = m.Probe(ctx, false)
	require.NoError(t, err)
	require.NotEqual(t, first.Digest, m.Fingerprint().Digest)

	// Replaced by an unprepared llama-embed: refused, naming why.
	_, raw := tinyLlamaEmbedFile(t, e.dir, func(mm *ollamatest.TinyLlamaEmbed) { mm.Seed = 11 })
	sum := sha256.Sum256(raw)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	require.NoError(t, e.client.CreateBlob(ctx, digest, bytes.NewReader(raw)))
	require.NoError(t, e.client.Create(ctx, &api.CreateRequest{Model: "swapped", Files: map[string]string{"model.gguf": digest}},
		func(api.ProgressResponse) error { return nil }))
	_, err = m.Probe(ctx, false)
	require.ErrorIs(t, err, ollama.ErrModelUnfit)
	require.ErrorContains(t, err, "no embedding capability")
}
