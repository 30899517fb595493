package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/ollama"
	"github.com/waywo/embed/internal/queue"
	"github.com/waywo/embed/internal/systemtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const dims = 4

// small is the system these tests run on: 4-d vectors, a small queue.
var small = systemtest.Options{Dims: dims, Limits: queue.StreamLimits{MaxMsgs: 1000, MaxBytes: 1 << 26}}

func TestQueueFullIsRefusedAtOnce(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	_, err := queue.EnsureJobsStream(context.Background(), b.JS, queue.LaneInteractive, queue.StreamLimits{MaxMsgs: 2, MaxBytes: 1 << 20}, queue.Placement{})
	require.NoError(t, err)
	for range 2 {
		_, err := b.JS.PublishMsg(context.Background(), queue.Job{RequestID: nuid.Next(), ReplyTo: "x.y", Documents: []string{"a"}}.Msg(queue.JobsSubject))
		require.NoError(t, err)
	}
	start := time.Now()
	_, err = b.Embed(10*time.Second, "one too many")
	require.ErrorIs(t, err, queue.ErrQueueFull)
	require.Less(t, time.Since(start), 5*time.Second)
}

// With NATS_USER/NATS_PASSWORD or NATS_TOKEN the embedded server requires
// them of every client, in-process ones included.
func TestEmbeddedServerRequiresConfiguredAuth(t *testing.T) {
	t.Parallel()
	log := zap.NewNop()
	for _, tc := range []struct {
		name      string
		opts      queue.ServerOptions
		good, bad config.NATSAuth
	}{
		{"UserPassword", queue.ServerOptions{User: "embed", Password: "pw"}, config.NATSAuth{User: "embed", Password: "pw"}, config.NATSAuth{User: "embed", Password: "nope"}},
		{"Token", queue.ServerOptions{Token: "tok"}, config.NATSAuth{Token: "tok"}, config.NATSAuth{Token: "other"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := tc.opts
			o.Addr, o.StoreDir = "127.0.0.1:0", t.TempDir()
			ns, err := queue.StartServer(o)
			require.NoError(t, err)
			t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })

			_, err = nats.Connect(ns.ClientURL(), nats.NoReconnect())
			require.Error(t, err, "no credentials")
			_, err = queue.Connect(ns.ClientURL(), "t", nil, tc.bad, log)
			require.ErrorContains(t, err, "Authorization Violation")
			nc, err := queue.Connect(ns.ClientURL(), "t", nil, tc.good, log)
			require.NoError(t, err)
			nc.Close()
			nc, err = queue.Connect("", "t", ns, tc.good, log)
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
	b := systemtest.Setup(t, small)
	require.NoError(t, queue.EnsureDeadLetters(context.Background(), b.JS, queue.Placement{}))
	sub, err := queue.WatchMaxDeliveries(b.NC, b.JS, time.Now, b.Log)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	cons, err := queue.EnsureWorkersConsumer(context.Background(), b.JS, queue.LaneInteractive, queue.StreamLimits{MaxMsgs: 1000, MaxBytes: 1 << 26}, queue.Placement{},
		queue.ConsumerOptions{AckWait: time.Second, MaxDeliver: 2})
	require.NoError(t, err)

	type result struct {
		err  error
		took time.Duration
	}
	got := make(chan result, 1)
	go func() {
		start := time.Now()
		_, err := b.Embed(time.Minute, "doomed")
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
	require.ErrorIs(t, r.err, ollama.ErrUnavailable)
	require.ErrorContains(t, r.err, "delivered 2 times without being settled")
	require.Less(t, r.took, 30*time.Second, "answered long before the request's timeout")
	require.Eventually(t, func() bool { return b.Queued() == 0 }, 5*time.Second, 5*time.Millisecond)
	dls := b.DeadLetters("", 1)
	require.Equal(t, queue.KindJobs, dls[0].Kind)
	job, err := queue.DecodeJob(dls[0].Header, dls[0].Payload)
	require.NoError(t, err)
	require.Equal(t, []string{"doomed"}, job.Documents)
}

// Each lane has its own limits: a full bulk lane refuses bulk work (429)
// and takes interactive requests as before; with one lane (EMBED_LANES
// false) bulk requests go to the interactive stream.
func TestLanesHaveTheirOwnLimits(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	_, err := queue.EnsureJobsStream(context.Background(), b.JS, queue.LaneBulk, queue.StreamLimits{MaxMsgs: 2, MaxBytes: 1 << 20}, queue.Placement{})
	require.NoError(t, err)
	embed := func(lane queue.Lane, docs ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := b.Client.Embed(ctx, queue.Request{Lane: lane, Documents: docs})
		return err
	}
	// 16 documents: two bulk jobs of queue.BulkJobDocuments fill the lane.
	docs := make([]string, 2*queue.BulkJobDocuments)
	for i := range docs {
		docs[i] = "d"
	}
	require.ErrorIs(t, embed(queue.LaneBulk, docs...), queue.ErrTimeout, "stored as two jobs, nobody answered")
	st, err := queue.ReadStats(context.Background(), b.JS, queue.LaneBulk)
	require.NoError(t, err)
	require.EqualValues(t, 2, st.Messages)
	require.ErrorIs(t, embed(queue.LaneBulk, "one more"), queue.ErrQueueFull)
	require.ErrorIs(t, embed(queue.LaneInteractive, "a query"), queue.ErrTimeout, "interactive is not refused")

	b.Client.OneLane = true
	require.ErrorIs(t, embed(queue.LaneBulk, "no lanes"), queue.ErrTimeout)
	st, err = queue.ReadStats(context.Background(), b.JS, queue.LaneInteractive)
	require.NoError(t, err)
	require.EqualValues(t, 2, st.Messages, "the query and the bulk request, in the one queue")
}
