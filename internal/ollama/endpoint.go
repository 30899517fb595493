// Package ollama is the worker's side of one Ollama: an Endpoint that
// checks the model before the first job (present, fit to serve our vectors,
// of the right length), records its fingerprint, embeds batches through
// /api/embed with a parser of its own for the floats, isolates an input the
// model refuses (engine.EmbedAll), and probes that the model is still
// served as it was. The verdict on a served model lives here too.
package ollama

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/ollama/ollama/api"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/engine"
	"github.com/waywo/embed/internal/vector"
)

// Embedder is the one call of Ollama's API a batch needs, POST /api/embed;
// fault-injection tests provide their own.
type Embedder interface {
	Embed(ctx context.Context, req *api.EmbedRequest) (*api.EmbedResponse, error)
}

// Options say which model an Endpoint serves and how to call it.
type Options struct {
	Model     string
	Dims      int
	MaxBatch  int           // most inputs per Ollama call
	Timeout   time.Duration // deadline of one call
	KeepAlive time.Duration // negative: keep loaded for ever
	Truncate  bool
	Pull      bool // Prepare pulls a missing model from a registry (EMBED_PULL)
	// OnCall, when set, is told the outcome of every Ollama call.
	OnCall func(inputs int, took time.Duration, err error)
	// Embedder replaces the /api/embed client (fault injection); nil is
	// Ollama's at the endpoint's URL.
	Embedder Embedder
	Log      *zap.Logger // default: none
}

// Endpoint is one Ollama serving the model.
type Endpoint struct {
	client   *api.Client // show, list, version, pull
	embedder Embedder
	opts     Options
	host     string // for messages and metrics
	fp       fingerprintBox
	prepared atomic.Bool
}

// NewEndpoint returns the endpoint of the Ollama at base. It calls nothing
// until Prepare.
func NewEndpoint(base *url.URL, o Options) *Endpoint {
	o.MaxBatch = max(o.MaxBatch, 1)
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	hc := NewHTTPClient()
	if o.Embedder == nil {
		o.Embedder = NewEmbedClient(base, hc)
	}
	return &Endpoint{client: api.NewClient(base, hc), embedder: o.Embedder, opts: o, host: base.String()}
}

// Provider is the server's kind, for traces.
func (e *Endpoint) Provider() string { return "ollama" }

// Host is the Ollama this endpoint calls.
func (e *Endpoint) Host() string { return e.host }

// Name is the model's name in Ollama.
func (e *Endpoint) Name() string { return e.opts.Model }

// Prepare makes sure the Ollama has the model — pulling it with
// Options.Pull, logging progress —, that it is fit to serve our vectors
// (CheckServed), records its fingerprint, then loads it with one call and
// checks the vector length. Its errors name the model and the host: an
// Ollama that cannot be reached is engine.ErrUnavailable (waiting may help), a
// model missing or unfit is engine.ErrModelNotFound or ErrModelUnfit (it cannot).
// Once it has succeeded it does nothing more: Probe keeps checking.
func (e *Endpoint) Prepare(ctx context.Context) error {
	if e.prepared.Load() {
		return nil
	}
	client, log, pull := e.client, e.opts.Log, e.opts.Pull
	showCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	show, err := client.Show(showCtx, &api.ShowRequest{Model: e.opts.Model})
	cancel()
	var se api.StatusError
	switch {
	case err == nil:
	case errors.As(err, &se) && se.StatusCode == http.StatusNotFound:
		if !pull {
			return fmt.Errorf("%w: Ollama at %s (OLLAMA_HOST) has no model %q (EMBED_MODEL): run `api model install` (or `ollama pull %s` for a model from a registry), or set EMBED_PULL=1", engine.ErrModelNotFound, e.host, e.opts.Model, e.opts.Model)
		}
		if err := e.pull(ctx); err != nil {
			return err
		}
		if show, err = client.Show(ctx, &api.ShowRequest{Model: e.opts.Model}); err != nil {
			return e.classify(err)
		}
	default:
		return fmt.Errorf("%w: cannot reach Ollama at %s (OLLAMA_HOST) to check model %q: %w", engine.ErrUnavailable, e.host, e.opts.Model, err)
	}
	served, err := CheckServed(show, e.opts.Model, e.host, e.opts.Dims)
	if err != nil {
		return err
	}
	fp, err := ReadFingerprint(ctx, client, e.opts.Model)
	if err != nil {
		return fmt.Errorf("reading the fingerprint of model %q at %s: %w", e.opts.Model, e.host, e.classify(err))
	}
	e.fp.set(fp)
	start := time.Now()
	if _, _, err := e.call(ctx, []string{"warm-up"}); err != nil {
		return fmt.Errorf("loading model %q at %s: %w", e.opts.Model, e.host, explainLoadFailure(err, served.Architecture, e.opts.Model, e.host, fp.OllamaVersion))
	}
	log.Info("model loaded", zap.String("model", e.opts.Model), zap.String("ollama", e.host),
		zap.Int("dimensions", e.opts.Dims), zap.String("digest", fp.ShortDigest()),
		zap.String("ollama_version", fp.OllamaVersion), zap.Duration("took", time.Since(start)))
	e.prepared.Store(true)
	return nil
}

// Fingerprint is the model's fingerprint as last read by Prepare or Probe.
func (e *Endpoint) Fingerprint() vector.Fingerprint { return e.fp.get() }

func (e *Endpoint) pull(ctx context.Context) error {
	client, log := e.client, e.opts.Log
	log.Info("pulling model", zap.String("model", e.opts.Model), zap.String("ollama", e.host))
	lastStatus, lastPct := "", -1
	err := client.Pull(ctx, &api.PullRequest{Model: e.opts.Model}, func(p api.ProgressResponse) error {
		pct := -1
		if p.Total > 0 {
			pct = int(p.Completed * 100 / p.Total)
		}
		if p.Status != lastStatus || pct/10 != lastPct/10 {
			log.Info("pull progress", zap.String("model", e.opts.Model), zap.String("status", p.Status),
				zap.Int64("completed", p.Completed), zap.Int64("total", p.Total), zap.Int("percent", pct))
			lastStatus, lastPct = p.Status, pct
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pulling model %q into Ollama at %s: %w", e.opts.Model, e.host, err)
	}
	return nil
}

// Probe tells whether Ollama answers and still serves the model as
// Prepare found it. The cheap form lists Ollama's models (one small call)
// and compares the model's digest; the full form, and the cheap one when the
// digest changed (the model was re-created or replaced), also reads the
// model's metadata and checks it with CheckServed before taking the new
// fingerprint. It returns the fingerprint before the probe, so the caller
// can tell a change.
func (e *Endpoint) Probe(ctx context.Context, full bool) (before vector.Fingerprint, err error) {
	client := e.client
	before = e.fp.get()
	list, err := client.List(ctx)
	if err != nil {
		return before, e.classify(err)
	}
	digest := listedDigest(list, e.opts.Model)
	if digest == "" {
		return before, fmt.Errorf("%w: %q at %s: Ollama no longer lists it", engine.ErrModelNotFound, e.opts.Model, e.host)
	}
	if !full && digest == before.Digest {
		return before, nil
	}
	show, err := client.Show(ctx, &api.ShowRequest{Model: e.opts.Model})
	if err != nil {
		return before, e.classify(err)
	}
	if _, err := CheckServed(show, e.opts.Model, e.host, e.opts.Dims); err != nil {
		return before, err
	}
	version, err := client.Version(ctx)
	if err != nil {
		return before, e.classify(err)
	}
	e.fp.set(vector.Fingerprint{Digest: digest, OllamaVersion: version})
	return before, nil
}
