// Package engine is what the worker needs of a model server, whatever API
// it speaks (Ollama's /api/embed, an OpenAI-compatible /v1/embeddings):
// the Output of embedding a list of inputs, the errors that tell the worker
// what to do next (an input refused, the server unavailable or busy, the
// model missing), and what every backend does alike — calls of at most
// MaxBatch inputs, an input the model refuses isolated from its
// batch-mates by bisection, and every reply checked before it is used.
package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

var (
	// ErrRejected means the model refused an input (the server answered a
	// 4xx, for example an input over the context length with truncation
	// off). Retrying the same input cannot help.
	ErrRejected = errors.New("input rejected by the model")
	// ErrUnavailable means the call failed for a reason that may pass: the
	// server unreachable, 5xx, a deadline, or a reply that did not fit.
	ErrUnavailable = errors.New("model unavailable")
	// ErrModelNotFound means the server does not have the model.
	ErrModelNotFound = errors.New("model not found")
)

// BusyError is a server's 429: it asked to be called again after
// RetryAfter (zero when it did not say). It is an ErrUnavailable.
type BusyError struct {
	Host       string
	RetryAfter time.Duration
	Message    string
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("%s is busy (429; retry after %s): %s", e.Host, e.RetryAfter, e.Message)
}

func (e *BusyError) Unwrap() error { return ErrUnavailable }

// RetryAfter is how long a server that answered 429 asked to be left
// alone; ok is false for any other error.
func RetryAfter(err error) (d time.Duration, ok bool) {
	var be *BusyError
	if errors.As(err, &be) {
		return be.RetryAfter, true
	}
	return 0, false
}

// Output is the result of embedding a list of inputs.
type Output struct {
	// Vectors[i] is input i's vector, nil when Rejected[i] is set.
	Vectors [][]float32
	// Rejected[i] is why the model refused input i (wraps ErrRejected).
	Rejected []error
	Tokens   int // prompt tokens the server reported
	Calls    int // calls made, bisection included
}

// Call is one round trip to a server: the vectors of inputs, in order, and
// the prompt tokens it reported.
type Call func(ctx context.Context, inputs []string) (vecs [][]float32, tokens int, err error)

// EmbedAll embeds inputs in calls of at most maxBatch. A server fails a
// whole call when one input is bad, so a rejected call is split in halves
// until the culprits are found: one bad input fails alone and its
// neighbours still get vectors. The error is set only when the model could
// not be used at all (ErrUnavailable, ErrModelNotFound); then Output is
// empty.
func EmbedAll(ctx context.Context, inputs []string, maxBatch int, call Call) (Output, error) {
	maxBatch = max(maxBatch, 1)
	out := Output{Vectors: make([][]float32, len(inputs)), Rejected: make([]error, len(inputs))}
	for start := 0; start < len(inputs); start += maxBatch {
		end := min(start+maxBatch, len(inputs))
		if err := embedRange(ctx, call, inputs, start, end, &out); err != nil {
			return Output{Calls: out.Calls}, err
		}
	}
	return out, nil
}

func embedRange(ctx context.Context, call Call, inputs []string, lo, hi int, out *Output) error {
	callCtx := ctx
	if hi < len(inputs) {
		callCtx = WithComputed(ctx, nil) // more calls follow: the server is not done
	}
	vecs, tokens, err := call(callCtx, inputs[lo:hi])
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
	if err := embedRange(ctx, call, inputs, lo, mid, out); err != nil {
		return err
	}
	return embedRange(ctx, call, inputs, mid, hi, out)
}

// CheckReply checks a server's vectors for n inputs: one each, dims long,
// every value finite. what names the server and model in the error, an
// ErrUnavailable: a reply that does not fit is never passed on.
func CheckReply(vecs [][]float32, n, dims int, what string) error {
	if len(vecs) != n {
		return fmt.Errorf("%w: %s returned %d vectors for %d inputs", ErrUnavailable, what, len(vecs), n)
	}
	for i, v := range vecs {
		if len(v) != dims {
			return fmt.Errorf("%w: %s returned a %d-dimensional vector, EMBED_DIMENSIONS is %d", ErrUnavailable, what, len(v), dims)
		}
		for _, f := range v {
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				return fmt.Errorf("%w: %s returned a non-finite value for input %d", ErrUnavailable, what, i)
			}
		}
	}
	return nil
}

// computedKey carries the function a call runs once the server has
// finished computing its last input (see WithComputed).
type computedKey struct{}

// WithComputed returns ctx carrying fn, which the call covering the last
// of EmbedAll's inputs runs once the server's answer begins (a 2xx
// status): the server has finished computing by then, and only reading and
// checking its reply remain. A serial runner is free for the next call
// from that moment.
func WithComputed(ctx context.Context, fn func()) context.Context {
	return context.WithValue(ctx, computedKey{}, fn)
}

// Computed runs ctx's WithComputed function, if it has one. A backend's
// call runs it when the server's answer begins.
func Computed(ctx context.Context) {
	if fn, ok := ctx.Value(computedKey{}).(func()); ok && fn != nil {
		fn()
	}
}
