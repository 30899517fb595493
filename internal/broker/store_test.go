package broker_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/dispatch"
	"github.com/waywo/embed/internal/proctest"
	"github.com/waywo/embed/internal/wire"
)

// A full disk under the embedded store: requests fail fast with a clear
// error (not their whole timeout), the health says why, and once space
// returns JetStream is restarted and jobs are stored again, unaided.
func TestFullStoreFailsFastAndRecovers(t *testing.T) {
	dir := proctest.SmallDisk(t, "48m")
	log := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
	health := broker.NewStreamHealth("jobs stream", wire.JobsStream, log)
	guard := broker.NewStoreGuard(dir, health, log)
	ns, err := broker.StartServer(broker.ServerOptions{Addr: "127.0.0.1:0", StoreDir: dir, StoreFault: guard.Fault, Log: log})
	require.NoError(t, err)
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); guard.Run(ctx, ns) }()
	t.Cleanup(func() { cancel(); <-done })
	nc, err := broker.Connect(broker.Dial{Server: ns, Name: "test", Log: log})
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := broker.NewJetStream(nc)
	require.NoError(t, err)
	_, err = dispatch.EnsureJobsStream(ctx, js, wire.LaneInteractive, wire.StreamLimits{MaxMsgs: 100_000, MaxBytes: 8 << 20}, broker.Placement{})
	require.NoError(t, err)
	client, err := dispatch.NewClient(nc, js, 4, time.Now, log)
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Close() })
	client.Health = health

	// embed publishes one job; with no worker, a stored job ends in a timeout.
	embed := func(wait time.Duration) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		start := time.Now()
		_, err := client.Embed(ctx, dispatch.Request{Documents: []string{"a project"}})
		return time.Since(start), err
	}
	_, err = embed(200 * time.Millisecond)
	require.ErrorIs(t, err, dispatch.ErrTimeout, "stored, and nobody answered")

	filler := proctest.Fill(t, dir)
	require.Eventually(t, func() bool { return health.Err() != nil }, 10*time.Second, 10*time.Millisecond)
	require.ErrorContains(t, health.Err(), "cannot write")
	require.ErrorContains(t, health.Err(), "EMBED_DATA_DIR")
	took, err := embed(30 * time.Second)
	require.ErrorIs(t, err, broker.ErrUnavailable)
	require.ErrorContains(t, err, " free")
	require.Less(t, took, 100*time.Millisecond, "refused at once while the store cannot write")

	require.NoError(t, os.Remove(filler))
	require.Eventually(t, func() bool { return health.Err() == nil }, 20*time.Second, 20*time.Millisecond, "recovers by itself")

	// A write that fails for good (the disk filled past the guard, between
	// two looks) breaks the stream until JetStream restarts: the guard
	// restarts it once there is room.
	guard.Fault("JetStream stream '$G > EMBED_JOBS' critical write error: write: no space left on device")
	require.Eventually(t, func() bool { return health.Err() == nil }, 20*time.Second, 20*time.Millisecond, "restarts and recovers")
	require.Eventually(t, func() bool {
		_, err := embed(300 * time.Millisecond)
		return errors.Is(err, dispatch.ErrTimeout)
	}, 10*time.Second, 50*time.Millisecond, "jobs are stored after the restart")
	require.Eventually(t, func() bool {
		_, err := embed(300 * time.Millisecond)
		return errors.Is(err, dispatch.ErrTimeout)
	}, 10*time.Second, 50*time.Millisecond, "jobs are stored again")
	st, err := dispatch.ReadStats(context.Background(), js, wire.LaneInteractive)
	require.NoError(t, err)
	require.Positive(t, st.Messages)
}
