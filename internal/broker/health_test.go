package broker

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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

// A copy not current at two looks running degrades the stream, which
// still serves; one look is a copy catching up. The copy current again
// ends it.
func TestCopiesNotCurrentDegrade(t *testing.T) {
	h := NewStreamHealth("jobs stream", "EMBED_JOBS", zap.NewNop())
	behind := &jetstream.ClusterInfo{Leader: "n1", Replicas: []*jetstream.PeerInfo{{Name: "n2", Current: true}, {Name: "n3", Lag: 7042}}}
	h.lookAtCopies(behind)
	require.Empty(t, h.Degraded(), "one look: catching up")
	h.lookAtCopies(behind)
	require.Contains(t, h.Degraded(), "copies that are not current, on n3 (behind by 7042 operations)")
	require.NoError(t, h.Err(), "it still serves")
	h.lookAtCopies(&jetstream.ClusterInfo{Leader: "n1", Replicas: []*jetstream.PeerInfo{{Name: "n2", Current: true}, {Name: "n3", Offline: true}}})
	require.Contains(t, h.Degraded(), "n3 (offline)")
	h.lookAtCopies(&jetstream.ClusterInfo{Leader: "n1", Replicas: []*jetstream.PeerInfo{{Name: "n2", Current: true}, {Name: "n3", Current: true}}})
	require.Empty(t, h.Degraded())
	h.lookAtCopies(nil) // one server: no copies
	require.Empty(t, h.Degraded())
}
