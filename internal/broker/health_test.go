package broker

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// A failed publish makes the health say so until a publish succeeds, or
// for publishFailureCounts when none follows; a store fault until cleared.
func TestStreamHealthForgetsAnOldPublishFailure(t *testing.T) {
	h := NewStreamHealth("jobs stream", "EMBED_JOBS", zap.NewNop())
	require.NoError(t, h.Err())
	h.Published(errors.New("no responders"))
	require.ErrorContains(t, h.Err(), "cannot take a publish")
	h.Published(nil)
	require.NoError(t, h.Err())

	h.Published(errors.New("no responders"))
	h.mu.Lock()
	h.pubLast = time.Now().Add(-publishFailureCounts) // no publish since
	h.mu.Unlock()
	require.NoError(t, h.Err(), "an idle api is not unhealthy for ever")

	h.SetStoreFault(errors.New("the JetStream store cannot write"))
	require.ErrorContains(t, h.Err(), "cannot write")
	require.Error(t, h.StoreFault())
	h.SetStoreFault(nil)
	require.NoError(t, h.Err())
}
