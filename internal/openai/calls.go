// The HTTP round trips: one /embeddings call with its reply checked and its
// status classified, and GET /models.

package openai

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/waywo/embed/internal/engine"
	"github.com/waywo/embed/internal/vector"
)

// maxReplyBytes bounds what is read of one reply: far above any batch
// (64 inputs x 4096 floats as text is about 3 MB) yet finite.
const maxReplyBytes = 256 << 20

// maxRetryAfter caps a Retry-After: an engine that asks for more is
// probed again after this.
const maxRetryAfter = 5 * time.Minute

type embedRequest struct {
	Model          string   `json:"model"`
	Input          []string `json:"input"`
	EncodingFormat string   `json:"encoding_format"`
}

type embedReply struct {
	Model string `json:"model"`
	Data  []struct {
		Index     int             `json:"index"`
		Embedding json.RawMessage `json:"embedding"`
	} `json:"data"`
	Usage struct {
		PromptTokens int `json:"prompt_tokens"`
	} `json:"usage"`
}

// wrongDims is a reply whose vectors are not EMBED_DIMENSIONS long.
type wrongDims struct{ got int }

func (w *wrongDims) Error() string { return fmt.Sprintf("a %d-dimensional vector", w.got) }
func (w *wrongDims) Unwrap() error { return engine.ErrUnavailable }

// callOnce is one POST /embeddings with a deadline, its reply checked:
// one vector per input, each index once, each EMBED_DIMENSIONS long and
// finite, and the model the one asked for.
func (e *Endpoint) callOnce(ctx context.Context, inputs []string) ([][]float32, int, error) {
	ctx, cancel := context.WithTimeout(ctx, e.opts.Timeout)
	defer cancel()
	format := "base64"
	if e.floats.Load() {
		format = "float"
	}
	body, err := json.Marshal(embedRequest{Model: e.opts.Model, Input: inputs, EncodingFormat: format})
	if err != nil {
		return nil, 0, err
	}
	raw, err := e.do(ctx, http.MethodPost, "/embeddings", body)
	if err != nil {
		return nil, 0, err
	}
	var reply embedReply
	if err := json.Unmarshal(raw, &reply); err != nil {
		return nil, 0, fmt.Errorf("%w: %s: unreadable /embeddings reply (%d bytes): %v", engine.ErrUnavailable, e.base, len(raw), err)
	}
	if reply.Model != "" && reply.Model != e.opts.Model {
		return nil, 0, fmt.Errorf("%w: %s answered with model %q for %q", engine.ErrUnavailable, e.base, reply.Model, e.opts.Model)
	}
	what := fmt.Sprintf("model %q at %s", e.opts.Model, e.base)
	if len(reply.Data) != len(inputs) {
		return nil, 0, fmt.Errorf("%w: %s returned %d vectors for %d inputs", engine.ErrUnavailable, what, len(reply.Data), len(inputs))
	}
	vecs := make([][]float32, len(inputs))
	for _, d := range reply.Data {
		if d.Index < 0 || d.Index >= len(inputs) || vecs[d.Index] != nil {
			return nil, 0, fmt.Errorf("%w: %s returned index %d twice or out of range for %d inputs", engine.ErrUnavailable, what, d.Index, len(inputs))
		}
		v, err := decodeEmbedding(d.Embedding)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: %s: vector %d: %v", engine.ErrUnavailable, what, d.Index, err)
		}
		if len(v) != e.opts.Dims {
			return nil, 0, fmt.Errorf("%s: %w", what, &wrongDims{got: len(v)})
		}
		vecs[d.Index] = v
	}
	if err := engine.CheckReply(vecs, len(inputs), e.opts.Dims, what); err != nil {
		return nil, 0, err
	}
	return vecs, reply.Usage.PromptTokens, nil
}

// decodeEmbedding reads one embedding as the engine sent it: a base64
// string of little-endian float32 values, or a JSON array of numbers (an
// engine that ignores encoding_format).
func decodeEmbedding(raw json.RawMessage) ([]float32, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("base64: %w", err)
		}
		if len(b)%4 != 0 {
			return nil, fmt.Errorf("base64 of %d bytes is not float32 values", len(b))
		}
		return vector.Decode(b, len(b)/4)
	}
	var v []float32
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	return v, nil
}

// get reads GET path as JSON into out.
func (e *Endpoint) get(ctx context.Context, path string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, e.opts.Timeout)
	defer cancel()
	raw, err := e.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%w: %s: unreadable %s reply: %v", engine.ErrUnavailable, e.base, path, err)
	}
	return nil
}

// do is one request; a status of 400 or more is classified (see classify).
func (e *Endpoint) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if e.opts.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+e.opts.APIKey)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", engine.ErrUnavailable, e.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < http.StatusBadRequest {
		engine.Computed(ctx)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: reading the reply: %w", engine.ErrUnavailable, e.base, err)
	}
	if resp.StatusCode >= http.StatusBadRequest {
		return nil, e.classify(resp, raw)
	}
	return raw, nil
}

// classify turns an error status into the error the worker acts on: 429
// busy (with its Retry-After), 401 and 403 a key the engine refuses, 404
// a model (or API path) it does not have, 408 and 5xx unavailable, any
// other 4xx a refused input.
func (e *Endpoint) classify(resp *http.Response, raw []byte) error {
	msg := errorMessage(raw)
	code := resp.StatusCode
	switch {
	case code == http.StatusTooManyRequests:
		return &engine.BusyError{Host: e.base, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now()), Message: msg}
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return &refusedKey{base: e.base, code: code, msg: msg}
	case code == http.StatusNotFound:
		return fmt.Errorf("%w: %s answered 404 for %s: %s", engine.ErrModelNotFound, e.base, resp.Request.URL.Path, msg)
	case code == http.StatusRequestTimeout || code >= 500:
		return fmt.Errorf("%w: %s answered %d: %s", engine.ErrUnavailable, e.base, code, msg)
	}
	return fmt.Errorf("%w: %s answered %d: %s", engine.ErrRejected, e.base, code, msg)
}

// refusedKey is a 401 or 403: EMBED_BACKEND_API_KEY is missing or wrong.
// Waiting does not help, so it is not an ErrUnavailable: Prepare returns
// it, and the worker stops with it.
type refusedKey struct {
	base string
	code int
	msg  string
}

func (r *refusedKey) Error() string {
	return fmt.Sprintf("the engine at %s refused the request (%d: %s): check EMBED_BACKEND_API_KEY", r.base, r.code, r.msg)
}

// errorMessage is the message of an error reply: OpenAI's
// {"error": {"message": ...}}, a plain {"error": "..."} or {"message":
// ...}, or the text itself.
func errorMessage(raw []byte) string {
	var e struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(raw, &e) == nil {
		var nested struct {
			Message string `json:"message"`
		}
		var plain string
		switch {
		case json.Unmarshal(e.Error, &nested) == nil && nested.Message != "":
			return nested.Message
		case json.Unmarshal(e.Error, &plain) == nil && plain != "":
			return plain
		case e.Message != "":
			return e.Message
		}
	}
	s := strings.TrimSpace(string(raw))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date; zero
// when absent or unreadable, at most maxRetryAfter.
func retryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if s, err := strconv.Atoi(h); err == nil {
		return min(max(time.Duration(s)*time.Second, 0), maxRetryAfter)
	}
	if t, err := http.ParseTime(h); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter)
	}
	return 0
}
