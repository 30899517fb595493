package embed

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/ollama/ollama/api"
	"go.uber.org/zap"
)

var (
	// ErrRejected means the model refused an input (Ollama answered 4xx, for
	// example an input over the context length with truncation off).
	// Retrying the same input cannot help.
	ErrRejected = errors.New("input rejected by the model")
	// ErrUnavailable means the call failed for a reason that may pass:
	// Ollama unreachable, 5xx, a deadline, or a reply that did not fit.
	ErrUnavailable = errors.New("model unavailable")
	// ErrModelNotFound means Ollama does not have the model.
	ErrModelNotFound = errors.New("model not found")
)

// Backend is the one method of the Ollama client the model needs;
// *api.Client has it, and fault-injection tests provide their own.
type Backend interface {
	Embed(ctx context.Context, req *api.EmbedRequest) (*api.EmbedResponse, error)
}

// ModelOptions say how to call the model.
type ModelOptions struct {
	Name      string
	Dims      int
	MaxBatch  int           // most inputs per Ollama call
	Timeout   time.Duration // deadline of one call
	KeepAlive time.Duration // negative: keep loaded for ever
	Truncate  bool
	// OnCall, when set, is told the outcome of every Ollama call.
	OnCall func(inputs int, took time.Duration, err error)
}

// Model calls one Ollama endpoint and checks what comes back.
type Model struct {
	client Backend
	opts   ModelOptions
	host   string // for messages
	fp     fingerprintBox
}

// NewModel wraps client. host names the endpoint in errors and logs.
func NewModel(client Backend, host string, opts ModelOptions) *Model {
	if opts.MaxBatch < 1 {
		opts.MaxBatch = 1
	}
	return &Model{client: client, opts: opts, host: host}
}

// Host is the endpoint this model calls.
func (m *Model) Host() string { return m.host }

// Name is the Ollama model name.
func (m *Model) Name() string { return m.opts.Name }

// Output is the result of embedding a list of inputs.
type Output struct {
	// Vectors[i] is input i's vector, nil when Rejected[i] is set.
	Vectors [][]float32
	// Rejected[i] is why the model refused input i (wraps ErrRejected).
	Rejected []error
	Tokens   int // prompt tokens Ollama reported
	Calls    int // Ollama calls made, bisection included
}

// EmbedAll embeds inputs in calls of at most MaxBatch. Ollama fails a whole
// call when one input is bad, so a rejected call is split in halves until the
// culprits are found: one bad input fails alone and its neighbours still get
// vectors. The error is set only when the model could not be used at all
// (ErrUnavailable, ErrModelNotFound); then Output is empty.
func (m *Model) EmbedAll(ctx context.Context, inputs []string) (Output, error) {
	out := Output{Vectors: make([][]float32, len(inputs)), Rejected: make([]error, len(inputs))}
	for start := 0; start < len(inputs); start += m.opts.MaxBatch {
		end := min(start+m.opts.MaxBatch, len(inputs))
		if err := m.embedRange(ctx, inputs, start, end, &out); err != nil {
			return Output{Calls: out.Calls}, err
		}
	}
	return out, nil
}

func (m *Model) embedRange(ctx context.Context, inputs []string, lo, hi int, out *Output) error {
	vecs, tokens, err := m.call(ctx, inputs[lo:hi])
	out.Calls++
	switch {
	case err == nil:
		copy(out.Vectors[lo:hi], vecs)
		out.Tokens += tokens
		return nil
	case !errors.Is(err, ErrRejected):
		return err
	case hi-lo == 1:
		out.Rejected[lo] = err
		return nil
	}
	mid := lo + (hi-lo)/2
	if err := m.embedRange(ctx, inputs, lo, mid, out); err != nil {
		return err
	}
	return m.embedRange(ctx, inputs, mid, hi, out)
}

// call is one Ollama /api/embed round trip with a deadline, its reply checked
// for count, length and finite values.
func (m *Model) call(ctx context.Context, inputs []string) ([][]float32, int, error) {
	start := time.Now()
	vecs, tokens, err := m.callOnce(ctx, inputs)
	if m.opts.OnCall != nil {
		m.opts.OnCall(len(inputs), time.Since(start), err)
	}
	return vecs, tokens, err
}

func (m *Model) callOnce(ctx context.Context, inputs []string) ([][]float32, int, error) {
	ctx, cancel := context.WithTimeout(ctx, m.opts.Timeout)
	defer cancel()
	truncate := m.opts.Truncate
	resp, err := m.client.Embed(ctx, &api.EmbedRequest{
		Model:     m.opts.Name,
		Input:     inputs,
		KeepAlive: &api.Duration{Duration: m.opts.KeepAlive},
		Truncate:  &truncate,
	})
	if err != nil {
		return nil, 0, m.classify(err)
	}
	if len(resp.Embeddings) != len(inputs) {
		return nil, 0, fmt.Errorf("%w: ollama at %s returned %d vectors for %d inputs", ErrUnavailable, m.host, len(resp.Embeddings), len(inputs))
	}
	for i, v := range resp.Embeddings {
		if len(v) != m.opts.Dims {
			return nil, 0, fmt.Errorf("%w: model %q at %s returned a %d-dimensional vector, EMBED_DIMENSIONS is %d", ErrUnavailable, m.opts.Name, m.host, len(v), m.opts.Dims)
		}
		for _, f := range v {
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				return nil, 0, fmt.Errorf("%w: model %q at %s returned a non-finite value for input %d", ErrUnavailable, m.opts.Name, m.host, i)
			}
		}
	}
	return resp.Embeddings, resp.PromptEvalCount, nil
}

func (m *Model) classify(err error) error {
	var se api.StatusError
	if errors.As(err, &se) {
		switch {
		case se.StatusCode == http.StatusNotFound:
			return fmt.Errorf("%w: %q at %s: %s", ErrModelNotFound, m.opts.Name, m.host, se.ErrorMessage)
		case se.StatusCode >= 400 && se.StatusCode < 500 && se.StatusCode != http.StatusTooManyRequests && se.StatusCode != http.StatusRequestTimeout:
			return fmt.Errorf("%w: %s", ErrRejected, se.ErrorMessage)
		}
		return fmt.Errorf("%w: ollama at %s: %s", ErrUnavailable, m.host, se.Error())
	}
	return fmt.Errorf("%w: ollama at %s: %w", ErrUnavailable, m.host, err)
}

// Prepare makes sure Ollama at the model's host has the model — pulling it
// when pull is set, logging progress —, that it is fit to serve our vectors
// (CheckServed), records its fingerprint, then loads it with one call and
// checks the vector length. Its errors name the model and the host.
func Prepare(ctx context.Context, client *api.Client, m *Model, pull bool, log *zap.Logger) error {
	showCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	show, err := client.Show(showCtx, &api.ShowRequest{Model: m.opts.Name})
	cancel()
	var se api.StatusError
	switch {
	case err == nil:
	case errors.As(err, &se) && se.StatusCode == http.StatusNotFound:
		if !pull {
			return fmt.Errorf("%w: Ollama at %s (OLLAMA_HOST) has no model %q (EMBED_MODEL): run `api model install` (or `ollama pull %s` for a model from a registry), or set EMBED_PULL=1", ErrModelNotFound, m.host, m.opts.Name, m.opts.Name)
		}
		if err := pullModel(ctx, client, m, log); err != nil {
			return err
		}
		if show, err = client.Show(ctx, &api.ShowRequest{Model: m.opts.Name}); err != nil {
			return m.classify(err)
		}
	default:
		return fmt.Errorf("%w: cannot reach Ollama at %s (OLLAMA_HOST) to check model %q: %w", ErrUnavailable, m.host, m.opts.Name, err)
	}
	served, err := CheckServed(show, m.opts.Name, m.host, m.opts.Dims)
	if err != nil {
		return err
	}
	fp, err := ReadFingerprint(ctx, client, m.opts.Name)
	if err != nil {
		return fmt.Errorf("reading the fingerprint of model %q at %s: %w", m.opts.Name, m.host, m.classify(err))
	}
	m.fp.set(fp)
	start := time.Now()
	if _, _, err := m.call(ctx, []string{"warm-up"}); err != nil {
		return fmt.Errorf("loading model %q at %s: %w", m.opts.Name, m.host, explainLoadFailure(err, served.Architecture, m.opts.Name, m.host, fp.OllamaVersion))
	}
	log.Info("model loaded", zap.String("model", m.opts.Name), zap.String("ollama", m.host),
		zap.Int("dimensions", m.opts.Dims), zap.String("digest", fp.ShortDigest()),
		zap.String("ollama_version", fp.OllamaVersion), zap.Duration("took", time.Since(start)))
	return nil
}

// Fingerprint is the model's fingerprint as last read by Prepare or Probe.
func (m *Model) Fingerprint() Fingerprint { return m.fp.get() }

func pullModel(ctx context.Context, client *api.Client, m *Model, log *zap.Logger) error {
	log.Info("pulling model", zap.String("model", m.opts.Name), zap.String("ollama", m.host))
	lastStatus, lastPct := "", -1
	err := client.Pull(ctx, &api.PullRequest{Model: m.opts.Name}, func(p api.ProgressResponse) error {
		pct := -1
		if p.Total > 0 {
			pct = int(p.Completed * 100 / p.Total)
		}
		if p.Status != lastStatus || pct/10 != lastPct/10 {
			log.Info("pull progress", zap.String("model", m.opts.Name), zap.String("status", p.Status),
				zap.Int64("completed", p.Completed), zap.Int64("total", p.Total), zap.Int("percent", pct))
			lastStatus, lastPct = p.Status, pct
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pulling model %q into Ollama at %s: %w", m.opts.Name, m.host, err)
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
func Probe(ctx context.Context, client *api.Client, m *Model, full bool) (before Fingerprint, err error) {
	before = m.fp.get()
	list, err := client.List(ctx)
	if err != nil {
		return before, m.classify(err)
	}
	digest := listedDigest(list, m.opts.Name)
	if digest == "" {
		return before, fmt.Errorf("%w: %q at %s: Ollama no longer lists it", ErrModelNotFound, m.opts.Name, m.host)
	}
	if !full && digest == before.Digest {
		return before, nil
	}
	show, err := client.Show(ctx, &api.ShowRequest{Model: m.opts.Name})
	if err != nil {
		return before, m.classify(err)
	}
	if _, err := CheckServed(show, m.opts.Name, m.host, m.opts.Dims); err != nil {
		return before, err
	}
	version, err := client.Version(ctx)
	if err != nil {
		return before, m.classify(err)
	}
	m.fp.set(Fingerprint{Digest: digest, OllamaVersion: version})
	return before, nil
}

// QueryInput is how nemotron wants a query: an instruction naming the task,
// then the query. Documents go to the model unchanged.
func QueryInput(task, text string) string {
	return "Instruct: " + task + "\nQuery: " + text
}
