// Package embedclient is the Go client of the waywo embedding service, for
// the services and tools that call it from Go. It mirrors the WAYWO Python
// client: embed many, embed one, the project text builder, blob to and from
// vector, and a health check. Timeouts and connection errors are retried
// (3 attempts, exponential backoff); an HTTP error status is returned at once
// as a *StatusError.
package embedclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/waywo/embed/internal/prompt"
	"github.com/waywo/embed/internal/vector"
)

// ErrCountMismatch means the service returned a different number of vectors
// than texts sent.
var ErrCountMismatch = errors.New("embedding count mismatch")

// StatusError is an HTTP error answer from the service.
type StatusError struct {
	StatusCode int
	Code       string // the service's short error code, e.g. "bad_request"
	Message    string
	RequestID  string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("embedding service: %d %s: %s", e.StatusCode, e.Code, e.Message)
}

// Client calls one embedding service. It is safe for concurrent use.
type Client struct {
	base           string
	http           *http.Client
	attempts       int
	backoff        time.Duration
	attemptTimeout time.Duration
	apiKey         string
	priority       string
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (default: a client with no overall
// timeout; each attempt has its own, see WithAttemptTimeout).
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithRetries sets the number of attempts and the first backoff; attempt n
// waits backoff * 2^(n-1) before it. Default: 3 attempts from 1 s.
func WithRetries(attempts int, backoff time.Duration) Option {
	return func(c *Client) { c.attempts, c.backoff = max(1, attempts), backoff }
}

// WithAPIKey sends "Authorization: Bearer key" (the service's EMBED_API_KEY).
func WithAPIKey(key string) Option { return func(c *Client) { c.apiKey = key } }

// Priorities of WithPriority.
const (
	Interactive = "interactive" // the default: answered before any bulk work
	Bulk        = "bulk"        // backfills and imports: never delays interactive requests
)

// WithPriority sends every request in that lane: Interactive (the
// default) or Bulk, for a backfill that must not slow search queries.
func WithPriority(p string) Option { return func(c *Client) { c.priority = p } }

// WithAttemptTimeout bounds one attempt (default 120 s); an attempt that
// runs out is retried like a connection error.
func WithAttemptTimeout(d time.Duration) Option { return func(c *Client) { c.attemptTimeout = d } }

// New returns a client of the service at baseURL, e.g. http://127.0.0.1:8000.
func New(baseURL string, opts ...Option) *Client {
	c := &Client{
		base:           strings.TrimRight(baseURL, "/"),
		http:           &http.Client{},
		attempts:       3,
		backoff:        time.Second,
		attemptTimeout: 120 * time.Second,
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Embed returns one vector per text, in order.
func (c *Client) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	return c.embed(ctx, texts, "document")
}

// EmbedQueries embeds search queries: the service adds the model's query
// instruction, so the vectors match documents embedded with Embed.
func (c *Client) EmbedQueries(ctx context.Context, queries []string) ([][]float32, error) {
	return c.embed(ctx, queries, "query")
}

// EmbedOne returns the vector of one text.
func (c *Client) EmbedOne(ctx context.Context, text string) ([]float32, error) {
	vs, err := c.Embed(ctx, []string{text})
	if err != nil {
		return nil, err
	}
	return vs[0], nil
}

func (c *Client) embed(ctx context.Context, texts []string, inputType string) ([][]float32, error) {
	if len(texts) == 0 {
		return nil, nil
	}
	body, err := json.Marshal(EmbedRequest{Documents: texts, InputType: inputType, Priority: c.priority})
	if err != nil {
		return nil, err
	}
	var out vectors
	if err := c.do(ctx, http.MethodPost, "/embed", body, &out); err != nil {
		return nil, err
	}
	if len(out) != len(texts) {
		return nil, fmt.Errorf("%w: sent %d texts, got %d vectors", ErrCountMismatch, len(texts), len(out))
	}
	return out, nil
}

// vectors reads an /embed answer: raw float32 when the server honours
// Accept: application/octet-stream, JSON otherwise.
type vectors [][]float32

func (v *vectors) decode(resp *http.Response, raw []byte) error {
	if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); ct == "application/octet-stream" {
		n, err1 := strconv.Atoi(resp.Header.Get("X-Embedding-Count"))
		dims, err2 := strconv.Atoi(resp.Header.Get("X-Embedding-Dimensions"))
		if err1 != nil || err2 != nil || n < 0 || dims <= 0 {
			return fmt.Errorf("embedding service: bad binary answer headers (count %q, dimensions %q)",
				resp.Header.Get("X-Embedding-Count"), resp.Header.Get("X-Embedding-Dimensions"))
		}
		vs, err := vector.DecodeAll(raw, n, dims)
		if err != nil {
			return fmt.Errorf("embedding service: %w", err)
		}
		*v = vs
		return nil
	}
	var out [][]float32
	if err := vector.DecodeObject(raw, "embeddings", &out, nil); err != nil {
		return fmt.Errorf("embedding service: bad JSON answer: %w", err)
	}
	*v = out
	return nil
}

// Search answers the k projects nearest to query (embedded with the
// model's query instruction), best first, among valid projects (k 0: 10).
func (c *Client) Search(ctx context.Context, query string, k int) (SearchResponse, error) {
	return c.SearchWith(ctx, SearchRequest{Query: query, K: k})
}

// SearchWith is Search with every option of POST /search, such as
// ValidOnly false to search every project.
func (c *Client) SearchWith(ctx context.Context, req SearchRequest) (SearchResponse, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return SearchResponse{}, err
	}
	var out SearchResponse
	err = c.do(ctx, http.MethodPost, "/search", body, &out)
	return out, err
}

// Similar answers the k valid projects nearest to project id, itself left
// out (k 0: 5). A project without a vector yet is a *StatusError 404.
func (c *Client) Similar(ctx context.Context, id int64, k int) (SearchResponse, error) {
	path := fmt.Sprintf("/projects/%d/similar", id)
	if k > 0 {
		path += "?k=" + strconv.Itoa(k)
	}
	var out SearchResponse
	err := c.do(ctx, http.MethodGet, path, nil, &out)
	return out, err
}

// Health asks whether the service can embed now. An unhealthy service
// answers 503: the error is a *StatusError and Health still carries the
// reason.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.do(ctx, http.MethodGet, "/health", nil, &h)
	var se *StatusError
	if errors.As(err, &se) && h.Reason == "" {
		h.Reason = se.Message
	}
	return h, err
}

// do runs one call with retries on timeouts and connection errors only.
func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	var last error
	for attempt := range c.attempts {
		if attempt > 0 {
			wait := c.backoff << (attempt - 1)
			select {
			case <-ctx.Done():
				return fmt.Errorf("embedding service: %w (last error: %v)", ctx.Err(), last)
			case <-time.After(wait):
			}
		}
		err := c.once(ctx, method, path, body, out)
		if err == nil || !retryable(ctx, err) {
			return err
		}
		last = err
	}
	return fmt.Errorf("embedding service: %d attempts failed: %w", c.attempts, last)
}

func (c *Client) once(ctx context.Context, method, path string, body []byte, out any) error {
	actx, cancel := context.WithTimeout(ctx, c.attemptTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(actx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	if _, ok := out.(*vectors); ok {
		req.Header.Set("Accept", "application/octet-stream, application/json;q=0.5")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := readBody(resp)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 400 {
		var e ErrorResponse
		_ = json.Unmarshal(raw, &e)
		msg := e.Error
		if msg == "" {
			msg = e.Reason
		}
		if msg == "" {
			msg = strings.TrimSpace(string(raw))
		}
		if _, ok := out.(*vectors); !ok {
			_ = json.Unmarshal(raw, out) // an unhealthy /health still carries its fields
		}
		return &StatusError{StatusCode: resp.StatusCode, Code: e.Code, Message: msg, RequestID: e.RequestID}
	}
	if v, ok := out.(*vectors); ok {
		return v.decode(resp, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("embedding service: bad response to %s %s: %w", method, path, err)
	}
	return nil
}

// readBody reads an answer into a buffer of its announced length (16 KB
// per 4096-d vector in binary): io.ReadAll's growing and zeroing of a fresh
// buffer was a sixth of the benchmark process's CPU in transport runs.
func readBody(resp *http.Response) ([]byte, error) {
	if n := resp.ContentLength; n > 0 && n <= 1<<30 {
		b := make([]byte, n)
		if _, err := io.ReadFull(resp.Body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	return io.ReadAll(resp.Body)
}

// retryable: a network failure or an attempt that timed out while the
// caller's own context is still alive. HTTP statuses are never retried.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return false
	}
	var ne net.Error
	var oe *net.OpError
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) || errors.As(err, &oe) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// ProjectText builds a WAYWO project's text exactly as the backend does:
// "{title}\n{description}\n{#tag1 #tag2}", stripped.
func ProjectText(title, description string, hashtags []string) string {
	return prompt.ProjectText(title, description, hashtags)
}

// VectorToBlob encodes a vector as little-endian float32, the layout of
// waywo_projects.description_embedding.
func VectorToBlob(v []float32) []byte { return vector.Append(make([]byte, 0, 4*len(v)), v) }

// BlobToVector decodes a stored description_embedding blob.
func BlobToVector(b []byte) ([]float32, error) {
	if len(b) == 0 || len(b)%4 != 0 {
		return nil, fmt.Errorf("%w: %d bytes is not a whole number of float32 values", vector.ErrBadBlob, len(b))
	}
	return vector.Decode(b, len(b)/4)
}
