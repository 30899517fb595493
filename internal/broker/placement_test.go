package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/deadletter"
	"github.com/waywo/embed/internal/dispatch"
	"github.com/waywo/embed/internal/wire"
)

// loneServer is a nats-server whose JetStream store holds maxStore bytes.
func loneServer(t *testing.T, maxStore int64) jetstream.JetStream {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		JetStreamMaxStore: maxStore, NoSigs: true})
	require.NoError(t, err)
	go ns.Start()
	require.True(t, ns.ReadyForConnections(10*time.Second))
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}

// A store too small for the jobs stream's limit is refused at start with
// the setting to change.
func TestStreamLargerThanTheStoreNamesTheSetting(t *testing.T) {
	t.Parallel()
	js := loneServer(t, 1<<20)
	_, err := dispatch.EnsureJobsStream(context.Background(), js, wire.LaneInteractive, wire.StreamLimits{MaxMsgs: 100, MaxBytes: 1 << 30}, broker.Placement{})
	require.ErrorContains(t, err, "EMBED_STREAM_MAX_BYTES=1073741824")
	require.ErrorContains(t, err, "insufficient storage resources")
	_, err = dispatch.EnsureJobsStream(context.Background(), js, wire.LaneInteractive, wire.StreamLimits{MaxMsgs: 100, MaxBytes: 512 << 10}, broker.Placement{})
	require.NoError(t, err, "a limit that fits is taken")
}

// Three copies on one server are refused naming EMBED_STREAM_REPLICAS.
func TestReplicasOnALoneServerNameTheSetting(t *testing.T) {
	t.Parallel()
	js := loneServer(t, 1<<30)
	err := deadletter.Ensure(context.Background(), js, broker.Placement{Replicas: 3})
	require.ErrorContains(t, err, "3 replicas (EMBED_STREAM_REPLICAS)")
}

// An operator's changes the api does not set survive its start, and the
// limits it sets are brought up to date.
func TestEnsureKeepsWhatItDoesNotSet(t *testing.T) {
	t.Parallel()
	js := loneServer(t, 1<<30)
	cfg := wire.JobsStreamConfig(wire.LaneInteractive, wire.StreamLimits{MaxMsgs: 10, MaxBytes: 1 << 20})
	cfg.Metadata = map[string]string{"owner": "ops"}
	_, err := js.CreateStream(context.Background(), cfg)
	require.NoError(t, err)
	s, err := dispatch.EnsureJobsStream(context.Background(), js, wire.LaneInteractive, wire.StreamLimits{MaxMsgs: 20, MaxBytes: 1 << 20}, broker.Placement{})
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	require.EqualValues(t, 20, info.Config.MaxMsgs)
	require.Equal(t, "ops", info.Config.Metadata["owner"])
}
