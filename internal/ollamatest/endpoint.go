package ollamatest

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/embed"
	"github.com/waywo/embed/internal/worker"
)

// EndpointOptions shape a worker endpoint; zero values take the defaults.
type EndpointOptions struct {
	URL      string // default: this server's (another Ollama-compatible one is not prepared)
	MaxBatch int    // default 32
	NoTrunc  bool   // refuse inputs over the context instead of truncating them
	OnCall   func(inputs int, took time.Duration, err error)
}

// Endpoint is a worker endpoint on the server with its tiny model, checked
// and warmed up first as a configured worker's is (embed.Prepare), and
// probed as one is.
func (s *Server) Endpoint(tb testing.TB, o EndpointOptions) worker.Endpoint {
	tb.Helper()
	if o.URL == "" {
		o.URL = s.URL
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = 32
	}
	u, err := url.Parse(o.URL)
	require.NoError(tb, err)
	client := embed.NewOllamaClient(u)
	model := embed.NewModel(embed.NewOllamaEmbedder(u, embed.NewHTTPClient()), o.URL, embed.ModelOptions{
		Name: s.Model, Dims: s.Dims, MaxBatch: o.MaxBatch, Timeout: 30 * time.Second, KeepAlive: -1, Truncate: !o.NoTrunc,
		OnCall: o.OnCall,
	})
	if o.URL == s.URL {
		require.NoError(tb, embed.Prepare(context.Background(), client, model, false, zap.NewNop()))
	}
	return worker.Endpoint{Model: model, Probe: func(ctx context.Context, full bool) error {
		_, err := embed.Probe(ctx, client, model, full)
		return err
	}}
}
