package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/config"
)

func TestRunNeedsNATSURL(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load(func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	err = run(context.Background(), cfg, zap.NewNop())
	require.ErrorContains(t, err, "NATS_URL is required")
}
