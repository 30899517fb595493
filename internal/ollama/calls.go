// Model calls: one /api/embed round trip, its reply checked, its errors
// classified.

package ollama

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/waywo/embed/internal/engine"
)

// EmbedAll embeds inputs in calls of at most MaxBatch, a refused input
// isolated from its batch-mates (see engine.EmbedAll).
func (e *Endpoint) EmbedAll(ctx context.Context, inputs []string) (engine.Output, error) {
	return engine.EmbedAll(ctx, inputs, e.opts.MaxBatch, e.call)
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
	if err := engine.CheckReply(resp.Embeddings, len(inputs), e.opts.Dims, fmt.Sprintf("model %q at %s", e.opts.Model, e.host)); err != nil {
		return nil, 0, err
	}
	return resp.Embeddings, resp.PromptEvalCount, nil
}

func (e *Endpoint) classify(err error) error {
	var se api.StatusError
	if errors.As(err, &se) {
		switch {
		case se.StatusCode == http.StatusNotFound:
			return fmt.Errorf("%w: %q at %s: %s", engine.ErrModelNotFound, e.opts.Model, e.host, se.ErrorMessage)
		case se.StatusCode >= 400 && se.StatusCode < 500 && se.StatusCode != http.StatusTooManyRequests && se.StatusCode != http.StatusRequestTimeout:
			return fmt.Errorf("%w: %s", engine.ErrRejected, se.ErrorMessage)
		}
		return fmt.Errorf("%w: ollama at %s: %s", engine.ErrUnavailable, e.host, se.Error())
	}
	return fmt.Errorf("%w: ollama at %s: %w", engine.ErrUnavailable, e.host, err)
}
