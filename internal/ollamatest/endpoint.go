package ollamatest

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/ollama"
)

// EndpointOptions shape a worker endpoint; zero values take the defaults.
type EndpointOptions struct {
	URL      string // default: this server's (another Ollama-compatible one is not prepared)
	MaxBatch int    // default 32
	NoTrunc  bool   // refuse inputs over the context instead of truncating them
	OnCall   func(inputs int, took time.Duration, err error)
}

// Endpoint is a worker endpoint on the server with its tiny model, checked
// and warmed up first as a configured worker's is (Prepare), and
// probed as one is.
func (s *Server) Endpoint(tb testing.TB, o EndpointOptions) *ollama.Endpoint {
	tb.Helper()
	if o.URL == "" {
		o.URL = s.URL
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = 32
	}
	u, err := url.Parse(o.URL)
	require.NoError(tb, err)
	model := ollama.NewEndpoint(u, ollama.Options{
		Model: s.Model, Dims: s.Dims, MaxBatch: o.MaxBatch, Timeout: 30 * time.Second, KeepAlive: -1, Truncate: !o.NoTrunc,
		OnCall: o.OnCall,
	})
	if o.URL == s.URL {
		require.NoError(tb, model.Prepare(context.Background()))
	}
	return model
}
