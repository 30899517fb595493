package deadletter_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/waywo/embed/internal/deadletter"
	"github.com/waywo/embed/internal/systemtest"
	"github.com/waywo/embed/internal/wire"
	"github.com/waywo/embed/internal/worker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const dims = 4

// small is the system these tests run on: 4-d vectors, a small queue.
var small = systemtest.Options{Dims: dims, Limits: wire.StreamLimits{MaxMsgs: 1000, MaxBytes: 1 << 26}}

// A job that runs out of deliveries without ever being settled (its
// worker dies every time) is dead-lettered from JetStream's advisory, its
// requester is answered at once, and it leaves the work queue.
func TestJobOutOfDeliveriesIsDeadLettered(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	// The bundle's system runs the watch, as the api does.
	cons, err := worker.EnsureWorkersConsumer(context.Background(), b.JS, wire.LaneInteractive,
		wire.ConsumerOptions{AckWait: time.Second, MaxDeliver: 2})
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
	require.ErrorIs(t, r.err, wire.ErrUnavailable)
	require.ErrorContains(t, r.err, "delivered 2 times without being settled")
	require.Less(t, r.took, 30*time.Second, "answered long before the request's timeout")
	require.Eventually(t, func() bool { return b.Queued() == 0 }, 5*time.Second, 5*time.Millisecond)
	dls := b.DeadLetters("", 1)
	require.Equal(t, deadletter.KindJobs, dls[0].Kind)
	job, err := wire.DecodeJob(dls[0].Header, dls[0].Payload)
	require.NoError(t, err)
	require.Equal(t, []string{"doomed"}, job.Documents)
}
