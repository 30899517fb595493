// Model calls: batches cut to MaxBatch, a rejected input isolated by
// bisection, every reply checked.

package ollama

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/ollama/ollama/api"
)

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
func (e *Endpoint) EmbedAll(ctx context.Context, inputs []string) (Output, error) {
	out := Output{Vectors: make([][]float32, len(inputs)), Rejected: make([]error, len(inputs))}
	for start := 0; start < len(inputs); start += e.opts.MaxBatch {
		end := min(start+e.opts.MaxBatch, len(inputs))
		if err := e.embedRange(ctx, inputs, start, end, &out); err != nil {
			return Output{Calls: out.Calls}, err
		}
	}
	return out, nil
}

func (e *Endpoint) embedRange(ctx context.Context, inputs []string, lo, hi int, out *Output) error {
	vecs, tokens, err := e.call(ctx, inputs[lo:hi])
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
	if err := e.embedRange(ctx, inputs, lo, mid, out); err != nil {
		return err
	}
	return e.embedRange(ctx, inputs, mid, hi, out)
}

// call is one Ollama /api/embed round trip with a deadline, its reply checked
// for count, length and finite values.
func (e *Endpoint) call(ctx context.Context, inputs []string) ([][]float32, int, error) {
	start := time.Now()
	vecs, tokens, err := e.callOnce(ctx, inputs)
	if e.opts.OnCall != nil {
		e.opts.OnCall(len(inputs), time.Since(start), err)
	}
	return vecs, tokens, err
}

func (e *Endpoint) callOnce(ctx context.Context, inputs []string) ([][]float32, int, error) {
	ctx, cancel := context.WithTimeout(ctx, e.opts.Timeout)
	defer cancel()
	truncate := e.opts.Truncate
	resp, err := e.embedder.Embed(ctx, &api.EmbedRequest{
		Model:     e.opts.Model,
		Input:     inputs,
		KeepAlive: &api.Duration{Duration: e.opts.KeepAlive},
		Truncate:  &truncate,
	})
	if err != nil {
		return nil, 0, e.classify(err)
	}
	if len(resp.Embeddings) != len(inputs) {
		return nil, 0, fmt.Errorf("%w: ollama at %s returned %d vectors for %d inputs", ErrUnavailable, e.host, len(resp.Embeddings), len(inputs))
	}
	for i, v := range resp.Embeddings {
		if len(v) != e.opts.Dims {
			return nil, 0, fmt.Errorf("%w: model %q at %s returned a %d-dimensional vector, EMBED_DIMENSIONS is %d", ErrUnavailable, e.opts.Model, e.host, len(v), e.opts.Dims)
		}
		for _, f := range v {
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				return nil, 0, fmt.Errorf("%w: model %q at %s returned a non-finite value for input %d", ErrUnavailable, e.opts.Model, e.host, i)
			}
		}
	}
	return resp.Embeddings, resp.PromptEvalCount, nil
}

func (e *Endpoint) classify(err error) error {
	var se api.StatusError
	if errors.As(err, &se) {
		switch {
		case se.StatusCode == http.StatusNotFound:
			return fmt.Errorf("%w: %q at %s: %s", ErrModelNotFound, e.opts.Model, e.host, se.ErrorMessage)
		case se.StatusCode >= 400 && se.StatusCode < 500 && se.StatusCode != http.StatusTooManyRequests && se.StatusCode != http.StatusRequestTimeout:
			return fmt.Errorf("%w: %s", ErrRejected, se.ErrorMessage)
		}
		return fmt.Errorf("%w: ollama at %s: %s", ErrUnavailable, e.host, se.Error())
	}
	return fmt.Errorf("%w: ollama at %s: %w", ErrUnavailable, e.host, err)
}
