package workerproc_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/workerproc"
)

func TestRunNeedsNATSURL(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load(func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	err = workerproc.Run(context.Background(), cfg, zap.NewNop())
	require.ErrorContains(t, err, "NATS_URL is required")
}
