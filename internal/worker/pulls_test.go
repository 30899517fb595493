package worker_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollama/ollama/api"
	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/dispatch"
	"github.com/waywo/embed/internal/engine"
	"github.com/waywo/embed/internal/systemtest"
	"github.com/waywo/embed/internal/wire"
	"github.com/waywo/embed/internal/worker"
)

// interactiveConsumer is the workers' consumer of the interactive lane, as
// the api sees it.
func interactiveConsumer(t *testing.T, js jetstream.JetStream) jetstream.Consumer {
	t.Helper()
	c, err := js.Consumer(context.Background(), wire.LaneInteractive.Stream(), wire.LaneInteractive.Consumer())
	require.NoError(t, err)
	return c
}

// releaser returns a channel and the function that closes it once; the
// tests defer it, so that a failing test does not leave a call blocked.
func releaser() (<-chan struct{}, func()) {
	ch := make(chan struct{})
	var once sync.Once
	return ch, func() { once.Do(func() { close(ch) }) }
}

// blockedOnFirstCall is a model whose first call waits for release; it
// records every input it embeds.
func blockedOnFirstCall(release <-chan struct{}, seen *sync.Map) *fakeOllama {
	return &fakeOllama{fn: func(n int64, req *api.EmbedRequest) (*api.EmbedResponse, error) {
		if n == 1 {
			<-release
		}
		for _, s := range req.Input.([]string) {
			seen.Store(s, true)
		}
		return vectorsFor(req), nil
	}}
}

// busyWithBulk starts a bulk request whose call the model blocks on, and
// waits until that call runs.
func busyWithBulk(t *testing.T, client *dispatch.Client, fake *fakeOllama) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := client.Embed(ctx, dispatch.Request{Lane: wire.LaneBulk, Documents: []string{"the bulk document"}})
		done <- err
	}()
	require.Eventually(t, func() bool { return fake.calls.Load() == 1 }, 10*time.Second, time.Millisecond)
	return done
}

// A worker whose endpoints are all busy still pulls its next batch, but
// below a free worker: while one waits, every query goes to it, none
// waits behind the busy worker's call. Without the priorities the pulls are
// served in turn, and in a trial all ten queries waited for the busy call.
func TestBusyWorkerLeavesQueriesToAFreeOne(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	release, releaseNow := releaser()
	defer releaseNow()
	var busySeen, freeSeen sync.Map
	busy := blockedOnFirstCall(release, &busySeen)
	startWorker(b, wopts{id: "busy", fake: busy})
	bulk := busyWithBulk(t, b.Client, busy)
	free := &fakeOllama{fn: func(_ int64, req *api.EmbedRequest) (*api.EmbedResponse, error) {
		for _, s := range req.Input.([]string) {
			freeSeen.Store(s, true)
		}
		return vectorsFor(req), nil
	}}
	// Two calls per host: answering a query leaves the free worker an
	// endpoint with room, so every pull it makes asks as a free worker's,
	// and two waiting pulls always include one of its own (the busy
	// worker keeps one open at a time).
	startWorker(b, wopts{id: "free", fake: free, calls: 2})
	b.WaitReady(2)

	cons := interactiveConsumer(t, b.JS)
	const queries = 10
	var wg sync.WaitGroup
	strays := 0
	for i := range queries {
		// Both workers have a pull waiting, seen in three looks in a row
		// over several milliseconds: not the 1 ms pull with which the free
		// worker looks for more queries after taking one, but the one it
		// then waits on. (It renews that every quarter second; a query in
		// the round trip between two may go to either, as it should: one
		// such is allowed.)
		steady := 0
		require.Eventually(t, func() bool {
			ci, err := cons.Info(context.Background())
			if err != nil || ci.NumWaiting < 2 {
				steady = 0
				return false
			}
			steady++
			return steady >= 3
		}, 5*time.Second, 2*time.Millisecond)
		q := fmt.Sprintf("query %d", i)
		answered := make(chan error, 1)
		wg.Go(func() { _, err := b.Embed(30*time.Second, q); answered <- err })
		select {
		case err := <-answered:
			require.NoError(t, err)
		case <-time.After(2 * time.Second):
			strays++ // held by the busy worker until its call ends
		}
	}
	_, strayed := busySeen.Load("query 0")
	require.LessOrEqual(t, strays, 1, "queries that waited behind the busy worker's call (first one: %v)", strayed)
	releaseNow()
	wg.Wait()
	require.NoError(t, <-bulk)
	n := 0
	freeSeen.Range(func(any, any) bool { n++; return true })
	require.GreaterOrEqual(t, n, queries-1)
}

// Queries a busy worker holds for its next batch — the one it formed and
// those its standing pull brought meanwhile — go back to the queue at once
// when it stops, not after the ack wait: another worker answers them while
// the stopping one still finishes its call.
func TestQueriesABusyWorkerHoldsGoBackWhenItStops(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	release, releaseNow := releaser()
	defer releaseNow()
	var busySeen sync.Map
	busy := blockedOnFirstCall(release, &busySeen)
	stopBusy, busyDone := startWorker(b, wopts{id: "busy", fake: busy, ackWait: time.Minute})
	bulk := busyWithBulk(t, b.Client, busy)

	cons := interactiveConsumer(t, b.JS)
	answers := make(chan error, 2)
	for i := range 2 {
		go func() { _, err := b.Embed(30*time.Second, fmt.Sprintf("held %d", i)); answers <- err }()
		require.Eventually(t, func() bool {
			ci, err := cons.Info(context.Background())
			return err == nil && ci.NumAckPending == i+1
		}, 5*time.Second, time.Millisecond, "the busy worker took query %d", i)
	}
	go stopBusy()
	startWorker(b, wopts{id: "free", fake: &fakeOllama{fn: func(_ int64, req *api.EmbedRequest) (*api.EmbedResponse, error) {
		return vectorsFor(req), nil
	}}, ackWait: time.Minute})
	for range 2 {
		select {
		case err := <-answers:
			require.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("a query the stopping worker held waits for the ack wait")
		}
	}
	select {
	case <-busyDone:
		t.Fatal("the busy worker stopped before its call ended")
	default:
	}
	releaseNow()
	require.NoError(t, <-bulk)
	_, held := busySeen.Load("held 0")
	require.False(t, held, "the stopping worker embedded a query it had handed back")
}

// An endpoint takes its next call as soon as its server has computed the
// last one (engine.Computed, which the backends run when the answer
// begins), while that one's reply is still read: one call at a time on the
// server, none waiting for the worker's reading.
func TestEndpointTakesTheNextCallOnceTheServerHasComputed(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	release, releaseNow := releaser()
	defer releaseNow()
	second := make(chan struct{})
	fake := &fakeOllama{ctxFn: func(ctx context.Context, req *api.EmbedRequest) (*api.EmbedResponse, error) {
		if req.Input.([]string)[0] == "first" {
			engine.Computed(ctx) // the server answers; its reply is read slowly
			<-release
		} else {
			close(second)
		}
		return vectorsFor(req), nil
	}}
	startWorker(b, wopts{fake: fake})
	first := make(chan error, 1)
	go func() { _, err := b.Embed(20*time.Second, "first"); first <- err }()
	require.Eventually(t, func() bool { return fake.calls.Load() == 1 }, 10*time.Second, time.Millisecond)
	next := make(chan error, 1)
	go func() { _, err := b.Embed(20*time.Second, "second"); next <- err }()
	select {
	case <-second:
	case <-time.After(5 * time.Second):
		t.Fatal("the next call waited for the first call's reply to be read")
	}
	require.NoError(t, <-next)
	releaseNow()
	require.NoError(t, <-first)
}

// The interactive lane's consumer takes the prioritized policy, also when
// it was created before without it (a worker of an earlier release).
func TestInteractiveConsumerBecomesPrioritized(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	js, err := broker.NewJetStream(b.Dial(wire.RoleWorker, "consumer-test"))
	require.NoError(t, err)
	ctx := context.Background()
	o := wire.ConsumerOptions{AckWait: 30 * time.Second, MaxDeliver: 5}
	c, err := worker.EnsureWorkersConsumer(ctx, js, wire.LaneInteractive, o)
	require.NoError(t, err)
	require.Equal(t, jetstream.PriorityPolicyNone, c.CachedInfo().Config.PriorityPolicy)

	var calls atomic.Int64
	startWorker(b, wopts{fake: &fakeOllama{fn: func(_ int64, req *api.EmbedRequest) (*api.EmbedResponse, error) {
		calls.Add(1)
		return vectorsFor(req), nil
	}}})
	// The worker says it is ready once its model is; its consumers are
	// created beside that, so wait for both lanes' to exist.
	var ci, bulk *jetstream.ConsumerInfo
	require.Eventually(t, func() bool {
		ci, err = consumerInfo(ctx, b.JS, wire.LaneInteractive)
		if err != nil || ci.Config.PriorityPolicy == jetstream.PriorityPolicyNone {
			return false
		}
		bulk, err = consumerInfo(ctx, b.JS, wire.LaneBulk)
		return err == nil
	}, 10*time.Second, 5*time.Millisecond, "the worker did not make the interactive consumer prioritized and create the bulk one")
	require.Equal(t, jetstream.PriorityPolicyPrioritized, ci.Config.PriorityPolicy)
	require.Equal(t, []string{wire.WorkersPriorityGroup}, ci.Config.PriorityGroups)
	require.Equal(t, jetstream.PriorityPolicyNone, bulk.Config.PriorityPolicy, "the bulk lane's pulls need no priorities")
	_, err = b.Embed(10*time.Second, "a query")
	require.NoError(t, err)
	require.EqualValues(t, 1, calls.Load())
}

func consumerInfo(ctx context.Context, js jetstream.JetStream, lane wire.Lane) (*jetstream.ConsumerInfo, error) {
	c, err := js.Consumer(ctx, lane.Stream(), lane.Consumer())
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}
