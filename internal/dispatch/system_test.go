package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nuid"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/dispatch"
	"github.com/waywo/embed/internal/systemtest"
	"github.com/waywo/embed/internal/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const dims = 4

// small is the system these tests run on: 4-d vectors, a small queue.
var small = systemtest.Options{Dims: dims, Limits: wire.StreamLimits{MaxMsgs: 1000, MaxBytes: 1 << 26}}

func TestQueueFullIsRefusedAtOnce(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	_, err := dispatch.EnsureJobsStream(context.Background(), b.JS, wire.LaneInteractive, wire.StreamLimits{MaxMsgs: 2, MaxBytes: 1 << 20}, broker.Placement{})
	require.NoError(t, err)
	for range 2 {
		_, err := b.JS.PublishMsg(context.Background(), wire.Job{RequestID: nuid.Next(), ReplyTo: wire.ReplyPrefix + ".x.y", Documents: []string{"a"}}.Msg(wire.JobsSubject))
		require.NoError(t, err)
	}
	start := time.Now()
	_, err = b.Embed(10*time.Second, "one too many")
	require.ErrorIs(t, err, broker.ErrStreamFull)
	require.Less(t, time.Since(start), 5*time.Second)
}

// Each lane has its own limits: a full bulk lane refuses bulk work (429)
// and takes interactive requests as before; with one lane (EMBED_LANES
// false) bulk requests go to the interactive stream.
func TestLanesHaveTheirOwnLimits(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	_, err := dispatch.EnsureJobsStream(context.Background(), b.JS, wire.LaneBulk, wire.StreamLimits{MaxMsgs: 2, MaxBytes: 1 << 20}, broker.Placement{})
	require.NoError(t, err)
	embed := func(lane wire.Lane, docs ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := b.Client.Embed(ctx, dispatch.Request{Lane: lane, Documents: docs})
		return err
	}
	// 16 documents: two bulk jobs of wire.BulkJobDocuments fill the lane.
	docs := make([]string, 2*wire.BulkJobDocuments)
	for i := range docs {
		docs[i] = "d"
	}
	require.ErrorIs(t, embed(wire.LaneBulk, docs...), dispatch.ErrTimeout, "stored as two jobs, nobody answered")
	st, err := dispatch.ReadStats(context.Background(), b.JS, wire.LaneBulk)
	require.NoError(t, err)
	require.EqualValues(t, 2, st.Messages)
	require.ErrorIs(t, embed(wire.LaneBulk, "one more"), broker.ErrStreamFull)
	require.ErrorIs(t, embed(wire.LaneInteractive, "a query"), dispatch.ErrTimeout, "interactive is not refused")

	b.Client.OneLane = true
	require.ErrorIs(t, embed(wire.LaneBulk, "no lanes"), dispatch.ErrTimeout)
	st, err = dispatch.ReadStats(context.Background(), b.JS, wire.LaneInteractive)
	require.NoError(t, err)
	require.EqualValues(t, 2, st.Messages, "the query and the bulk request, in the one queue")
}
