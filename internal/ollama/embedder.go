package ollama

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/waywo/embed/internal/engine"
	"github.com/waywo/embed/internal/vector"
)

// maxReplyBytes bounds what the worker reads from Ollama: far above any
// batch (32 inputs x 4096 floats x ~12 bytes is 1.6 MB) yet finite.
const maxReplyBytes = 512 << 20

// replyBuffers holds read buffers for Ollama's replies (1.6 MB for 32
// vectors): io.ReadAll's fresh, growing buffer per reply was a fifth of
// the worker's CPU, most of it zeroing memory.
var replyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func putReplyBuffer(b *bytes.Buffer) {
	if b.Cap() <= 64<<20 { // keep no giant buffer for ever
		replyBuffers.Put(b)
	}
}

// NewHTTPClient returns the HTTP client for Ollama calls: pooled
// connections, a dial timeout, and no overall timeout — every call carries a
// context deadline instead.
func NewHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        64,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
	}}
}

// NewClient returns Ollama's own client of the Ollama at base, for what an
// Endpoint does not do itself (create, copy, delete).
func NewClient(base *url.URL) *api.Client { return api.NewClient(base, NewHTTPClient()) }

// EmbedClient calls Ollama's POST /api/embed with the ollama/api request,
// response and error types, but decodes the reply's vectors with its own
// parser (vector.DecodeObject): the worker's profile showed encoding/json's
// per-value reflection and number parsing over thousands of floats as its
// largest cost.
type EmbedClient struct {
	endpoint string
	http     *http.Client
}

// NewEmbedClient returns the /api/embed client for the Ollama at base.
func NewEmbedClient(base *url.URL, hc *http.Client) *EmbedClient {
	return &EmbedClient{endpoint: strings.TrimRight(base.String(), "/") + "/api/embed", http: hc}
}

// Embed posts one /api/embed call. Errors are api.StatusError for HTTP
// statuses, as ollama/api returns them.
func (o *EmbedClient) Embed(ctx context.Context, req *api.EmbedRequest) (*api.EmbedResponse, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, o.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json")
	resp, err := o.http.Do(hreq)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < http.StatusBadRequest {
		engine.Computed(ctx)
	}
	buf := replyBuffers.Get().(*bytes.Buffer)
	defer putReplyBuffer(buf)
	buf.Reset()
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, maxReplyBytes)); err != nil {
		return nil, err
	}
	raw := buf.Bytes() // nothing decoded from it points into it
	if resp.StatusCode >= http.StatusBadRequest {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(raw))
		}
		return nil, api.StatusError{StatusCode: resp.StatusCode, ErrorMessage: e.Error}
	}
	var out api.EmbedResponse
	if err := decodeEmbedReply(raw, &out); err != nil {
		return nil, fmt.Errorf("decoding /api/embed reply (%d bytes): %w", len(raw), err)
	}
	return &out, nil
}

// decodeEmbedReply decodes Ollama's reply into out, the vectors with
// vector.DecodeObject's parser.
func decodeEmbedReply(raw []byte, out *api.EmbedResponse) error {
	return vector.DecodeObject(raw, "embeddings", &out.Embeddings, map[string]any{
		"model": &out.Model, "total_duration": &out.TotalDuration, "load_duration": &out.LoadDuration,
		"prompt_eval_count": &out.PromptEvalCount,
	})
}
