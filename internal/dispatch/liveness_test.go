package dispatch_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/waywo/embed/internal/dispatch"
	"github.com/waywo/embed/internal/systemtest"
	"github.com/waywo/embed/internal/vector"
	"github.com/waywo/embed/internal/wire"
)

// The served fingerprint is the one most ready workers report; a worker
// that cannot embed does not count, and two digests at once are warned of.
func TestRegistryFingerprintIsTheMajoritys(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	core, logs := observer.New(zap.WarnLevel)
	live, err := dispatch.WatchWorkers(b.NC, time.Now, zap.New(core))
	require.NoError(t, err)
	defer live.Close()
	_, ok := live.Fingerprint()
	require.False(t, ok, "unknown before any worker reports")
	a := vector.Fingerprint{Digest: "sha256:aaaa", OllamaVersion: "0.32.15"}
	c := vector.Fingerprint{Digest: "sha256:cccc", OllamaVersion: "0.32.15"}
	workers := b.Dial(wire.RoleWorker, "heartbeats")
	for _, hb := range []wire.Heartbeat{
		{ID: "w1", Ready: true, TTL: time.Minute, Fingerprint: a},
		{ID: "w2", Ready: true, TTL: time.Minute, Fingerprint: c},
		{ID: "w3", Ready: true, TTL: time.Minute, Fingerprint: a},
		{ID: "w4", Ready: false, TTL: time.Minute, Fingerprint: c},
		{ID: "w5", Ready: false, TTL: time.Minute, Fingerprint: c},
	} {
		data, err := json.Marshal(hb)
		require.NoError(t, err)
		require.NoError(t, workers.Publish(wire.HeartbeatSubject, data))
	}
	require.Eventually(t, func() bool { return len(live.Live()) == 5 }, 5*time.Second, 5*time.Millisecond)
	fp, ok := live.Fingerprint()
	require.True(t, ok)
	require.Equal(t, a, fp)
	mixed := logs.FilterMessageSnippet("workers serve different models").All()
	require.NotEmpty(t, mixed, "two digests at once are warned of")
	require.Equal(t, "w2", mixed[0].ContextMap()["worker"], "the first worker with another digest than one already live")
}
