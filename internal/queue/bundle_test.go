package queue

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/embed"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type qbundle struct {
	t      *testing.T
	ns     *server.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	client *Client
	reg    *Registry
	log    *zap.Logger
}

const dims = 4

func qsetup(t *testing.T) *qbundle {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	ns, err := StartEmbedded(EmbeddedOptions{Addr: "127.0.0.1:0", StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := Connect("", "test-api", ns, config.NATSAuth{}, log)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = EnsureJobsStream(context.Background(), js, StreamLimits{MaxMsgs: 1000, MaxBytes: 1 << 26})
	require.NoError(t, err)
	client, err := NewClient(nc, js, dims, time.Now, log)
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Close() })
	reg, err := WatchWorkers(nc, time.Now, log)
	require.NoError(t, err)
	t.Cleanup(func() { _ = reg.Close() })
	return &qbundle{t: t, ns: ns, nc: nc, js: js, client: client, reg: reg, log: log}
}

func (b *qbundle) queued() uint64 {
	s, err := b.js.Stream(context.Background(), JobsStream)
	require.NoError(b.t, err)
	info, err := s.Info(context.Background())
	require.NoError(b.t, err)
	return info.State.Msgs
}

func (b *qbundle) embed(timeout time.Duration, docs ...string) (Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return b.client.Embed(ctx, Request{Documents: docs})
}

// deadLetters waits for n dead letters and returns them.
func (b *qbundle) deadLetters(n int) []StoredDeadLetter {
	b.t.Helper()
	var dls []StoredDeadLetter
	require.Eventually(b.t, func() bool {
		var err error
		dls, err = ListDeadLetters(context.Background(), b.js, "", 100)
		return err == nil && len(dls) >= n
	}, 5*time.Second, 10*time.Millisecond)
	require.Len(b.t, dls, n)
	return dls
}

func TestQueueFullIsRefusedAtOnce(t *testing.T) {
	t.Parallel()
	b := qsetup(t)
	_, err := EnsureJobsStream(context.Background(), b.js, StreamLimits{MaxMsgs: 2, MaxBytes: 1 << 20})
	require.NoError(t, err)
	for range 2 {
		_, err := b.js.PublishMsg(context.Background(), Job{RequestID: nuid.Next(), ReplyTo: "x.y", Documents: []string{"a"}}.Msg(JobsSubject))
		require.NoError(t, err)
	}
	start := time.Now()
	_, err = b.embed(10*time.Second, "one too many")
	require.ErrorIs(t, err, ErrQueueFull)
	require.Less(t, time.Since(start), 5*time.Second)
}

// With NATS_USER/NATS_PASSWORD or NATS_TOKEN the embedded server requires
// them of every client, in-process ones included.
func TestEmbeddedServerRequiresConfiguredAuth(t *testing.T) {
	t.Parallel()
	log := zap.NewNop()
	for _, tc := range []struct {
		name      string
		opts      EmbeddedOptions
		good, bad config.NATSAuth
	}{
		{"UserPassword", EmbeddedOptions{User: "embed", Password: "pw"}, config.NATSAuth{User: "embed", Password: "pw"}, config.NATSAuth{User: "embed", Password: "nope"}},
		{"Token", EmbeddedOptions{Token: "tok"}, config.NATSAuth{Token: "tok"}, config.NATSAuth{Token: "other"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := tc.opts
			o.Addr, o.StoreDir = "127.0.0.1:0", t.TempDir()
			ns, err := StartEmbedded(o)
			require.NoError(t, err)
			t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })

			_, err = nats.Connect(ns.ClientURL(), nats.NoReconnect())
			require.Error(t, err, "no credentials")
			_, err = Connect(ns.ClientURL(), "t", nil, tc.bad, log)
			require.ErrorContains(t, err, "Authorization Violation")
			nc, err := Connect(ns.ClientURL(), "t", nil, tc.good, log)
			require.NoError(t, err)
			nc.Close()
			nc, err = Connect("", "t", ns, tc.good, log)
			require.NoError(t, err, "in-process with credentials")
			nc.Close()
		})
	}
}

// A job that runs out of deliveries without ever being settled (its
// worker dies every time) is dead-lettered from JetStream's advisory, its
// requester is answered at once, and it leaves the work queue.
func TestJobOutOfDeliveriesIsDeadLettered(t *testing.T) {
	t.Parallel()
	b := qsetup(t)
	require.NoError(t, EnsureDeadLetters(context.Background(), b.js))
	sub, err := WatchMaxDeliveries(b.nc, b.js, time.Now, b.log)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	cons, err := EnsureWorkersConsumer(context.Background(), b.js, StreamLimits{MaxMsgs: 1000, MaxBytes: 1 << 26},
		ConsumerOptions{AckWait: time.Second, MaxDeliver: 2})
	require.NoError(t, err)

	type result struct {
		err  error
		took time.Duration
	}
	got := make(chan result, 1)
	go func() {
		start := time.Now()
		_, err := b.embed(time.Minute, "doomed")
		got <- result{err, time.Since(start)}
	}()
	// A "worker" that takes the job and dies before settling it, twice,
	// then keeps asking for work (JetStream notices the exhausted job when
	// it next looks for something to deliver).
	taken := 0
	var r result
wait:
	for {
		select {
		case r = <-got:
			break wait
		default:
		}
		mb, err := cons.Fetch(1, jetstream.FetchMaxWait(500*time.Millisecond))
		require.NoError(t, err)
		for range mb.Messages() {
			taken++
		}
	}
	require.Equal(t, 2, taken)
	require.ErrorIs(t, r.err, embed.ErrUnavailable)
	require.ErrorContains(t, r.err, "delivered 2 times without being settled")
	require.Less(t, r.took, 30*time.Second, "answered long before the request's timeout")
	require.Eventually(t, func() bool { return b.queued() == 0 }, 5*time.Second, 5*time.Millisecond)
	dls := b.deadLetters(1)
	require.Equal(t, "jobs", dls[0].Kind)
	job, err := DecodeJob(dls[0].Header, dls[0].Payload)
	require.NoError(t, err)
	require.Equal(t, []string{"doomed"}, job.Documents)
}
