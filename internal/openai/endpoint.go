// Package openai is the worker's side of one engine with an
// OpenAI-compatible embeddings API (vLLM, llama.cpp's llama-server, TEI,
// Infinity, Ollama's own /v1): an Endpoint that checks, before the first
// job, that the engine lists the model and answers a probe embedding of
// EMBED_DIMENSIONS; takes a fingerprint from what the engine reports of the
// model; embeds batches through POST /v1/embeddings, as base64 where the
// engine supports it (no float text to parse) and as floats where it does
// not; checks every reply (count, order, length, finite values, the model
// it names); retries 5xx, timeouts and dropped connections within a call;
// and reports a 429 with its Retry-After to the worker, which rests the
// engine for that long and lets other engines take the batch.
package openai

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/waywo/embed/internal/backoff"
	"github.com/waywo/embed/internal/engine"
	"github.com/waywo/embed/internal/vector"
)

// Options say which model an Endpoint serves and how to call it.
type Options struct {
	Model    string // the engine's model id (EMBED_MODEL)
	Dims     int
	APIKey   string        // sent as a bearer token when set; never logged
	MaxBatch int           // most inputs per call
	Timeout  time.Duration // deadline of one attempt
	// Attempts is how many times one call is tried on a 5xx, a timeout or
	// a dropped connection (default 3).
	Attempts int
	// OnCall, when set, is told the outcome of every call.
	OnCall func(inputs int, took time.Duration, err error)
	HTTP   *http.Client // default: pooled connections, no overall timeout
	Log    *zap.Logger  // default: none
}

// Endpoint is one engine serving the model.
type Endpoint struct {
	base   string // the API's base URL, ending in /v1 or wherever /embeddings lives
	opts   Options
	hc     *http.Client
	floats atomic.Bool // the engine does not answer base64: ask for floats

	mu sync.Mutex
	fp vector.Fingerprint
}

// NewEndpoint returns the endpoint of the engine whose API is at base (for
// example http://vllm:8000/v1). It calls nothing until Prepare.
func NewEndpoint(base *url.URL, o Options) *Endpoint {
	o.MaxBatch = max(o.MaxBatch, 1)
	if o.Attempts <= 0 {
		o.Attempts = 3
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.HTTP == nil {
		o.HTTP = &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			MaxIdleConns:        64,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     90 * time.Second,
		}}
	}
	return &Endpoint{base: strings.TrimRight(base.String(), "/"), opts: o, hc: o.HTTP}
}

// Provider is the server's kind, for traces.
func (e *Endpoint) Provider() string { return "openai" }

// Host is the engine's base URL, for logs and metrics.
func (e *Endpoint) Host() string { return e.base }

// Name is the model id replies report.
func (e *Endpoint) Name() string { return e.opts.Model }

// Fingerprint is the model's as last read (see fingerprintOf).
func (e *Endpoint) Fingerprint() vector.Fingerprint {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fp
}

func (e *Endpoint) setFingerprint(fp vector.Fingerprint) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fp = fp
}

// Prepare checks that the engine lists the model and that a probe
// embedding has EMBED_DIMENSIONS values, learns whether the engine answers
// base64, and takes the fingerprint. It fails with engine.ErrUnavailable
// while the engine cannot be reached (the worker waits); a missing model,
// a refused API key or vectors of another length are returned for good.
func (e *Endpoint) Prepare(ctx context.Context) error {
	fp, err := e.readModel(ctx)
	if err != nil {
		return err
	}
	if err := e.probe(ctx, true); err != nil {
		return err
	}
	e.setFingerprint(fp)
	e.opts.Log.Info("model ready", zap.String("model", e.opts.Model), zap.String("engine", e.base), zap.Int("dimensions", e.opts.Dims),
		zap.String("fingerprint", fp.ShortDigest()), zap.Bool("base64", !e.floats.Load()))
	return nil
}

// Probe tells whether the engine answers and still lists the model as
// Prepare found it; full also embeds a probe text and checks its length.
// It returns the fingerprint before the probe, so the caller can tell a
// change.
func (e *Endpoint) Probe(ctx context.Context, full bool) (before vector.Fingerprint, err error) {
	before = e.Fingerprint()
	fp, err := e.readModel(ctx)
	if err != nil {
		return before, err
	}
	if full || fp.Digest != before.Digest {
		if err := e.probe(ctx, false); err != nil {
			return before, err
		}
	}
	e.setFingerprint(fp)
	return before, nil
}

// probe embeds one text and checks its length. learn, at Prepare, first
// tries base64 and falls back to floats when the engine refuses it.
func (e *Endpoint) probe(ctx context.Context, learn bool) error {
	if learn {
		e.floats.Store(false)
	}
	vecs, _, err := e.callOnce(ctx, []string{"probe"})
	if learn && errors.Is(err, engine.ErrRejected) {
		e.floats.Store(true)
		if vecs, _, err = e.callOnce(ctx, []string{"probe"}); err == nil {
			e.opts.Log.Info("the engine refuses encoding_format base64; asking for floats", zap.String("engine", e.base))
		}
	}
	var wrong *wrongDims
	switch {
	case errors.As(err, &wrong):
		return fmt.Errorf("model %q at %s answers %d-dimensional vectors, EMBED_DIMENSIONS is %d: set EMBED_DIMENSIONS to the model's, or serve the right model",
			e.opts.Model, e.base, wrong.got, e.opts.Dims)
	case errors.Is(err, engine.ErrRejected):
		return fmt.Errorf("model %q at %s refuses a probe embedding: %w", e.opts.Model, e.base, err)
	case err != nil:
		return err
	case len(vecs) != 1:
		return fmt.Errorf("%w: %s answered %d vectors for one probe", engine.ErrUnavailable, e.base, len(vecs))
	}
	return nil
}

// modelEntry is one model of GET /models, as the engines report it: the
// id and owner everywhere, and more where the engine says it (vLLM's root
// and max_model_len, llama-server's meta with the weights' parameter
// count, size and embedding length).
type modelEntry map[string]any

// readModel finds the model in GET /models and returns its fingerprint.
func (e *Endpoint) readModel(ctx context.Context) (vector.Fingerprint, error) {
	var list struct {
		Data []modelEntry `json:"data"`
	}
	if err := e.get(ctx, "/models", &list); err != nil {
		return vector.Fingerprint{}, err
	}
	var ids []string
	for _, m := range list.Data {
		id, _ := m["id"].(string)
		if id == e.opts.Model {
			return fingerprintOf(m, e.opts.Dims), nil
		}
		ids = append(ids, id)
	}
	return vector.Fingerprint{}, fmt.Errorf("%w: %q is not among the models the engine at %s lists (%s): set EMBED_MODEL to the engine's model id",
		engine.ErrModelNotFound, e.opts.Model, e.base, strings.Join(ids, ", "))
}

// fingerprintOf is the digest of what the engine reports of the model,
// less the fields that change by themselves (created: vLLM and
// llama-server give the time of the request), and the dimensions. It tells
// apart two models, or two builds the engine describes differently; it
// cannot prove the weights are the same, as Ollama's content digest does
// (docs/configuration.md says so).
func fingerprintOf(m modelEntry, dims int) vector.Fingerprint {
	clean := modelEntry{}
	for k, v := range m {
		if k != "created" {
			clean[k] = v
		}
	}
	b, _ := json.Marshal(struct {
		Model modelEntry `json:"model"`
		Dims  int        `json:"dims"`
	}{clean, dims}) // maps marshal with sorted keys: the same entry, the same digest
	sum := sha256.Sum256(b)
	return vector.Fingerprint{Digest: "sha256:" + hex.EncodeToString(sum[:])}
}

// EmbedAll embeds inputs in calls of at most MaxBatch, a refused input
// isolated from its batch-mates (see engine.EmbedAll).
func (e *Endpoint) EmbedAll(ctx context.Context, inputs []string) (engine.Output, error) {
	return engine.EmbedAll(ctx, inputs, e.opts.MaxBatch, e.call)
}

// retryDelay paces the attempts of one call: 100 ms, 200 ms, 400 ms...
var retryDelay = backoff.Policy{First: 100 * time.Millisecond, Max: 2 * time.Second, Jitter: true}

// call is one /embeddings call, tried again on a 5xx, a timeout or a
// dropped connection. A 429 goes back to the worker at once: it rests the
// engine for the Retry-After rather than holding the batch here.
func (e *Endpoint) call(ctx context.Context, inputs []string) (vecs [][]float32, tokens int, err error) {
	start := time.Now()
	for attempt := 1; ; attempt++ {
		vecs, tokens, err = e.callOnce(ctx, inputs)
		_, busy := engine.RetryAfter(err)
		if err == nil || busy || attempt >= e.opts.Attempts || ctx.Err() != nil || !errors.Is(err, engine.ErrUnavailable) {
			break
		}
		e.opts.Log.Debug("engine call failed; trying again", zap.String("engine", e.base), zap.Int("attempt", attempt), zap.Error(err))
		t := time.NewTimer(retryDelay.Delay(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	if e.opts.OnCall != nil {
		e.opts.OnCall(len(inputs), time.Since(start), err)
	}
	return vecs, tokens, err
}
