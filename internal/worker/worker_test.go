package worker_test

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ollama/ollama/api"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/waywo/embed/internal/deadletter"
	"github.com/waywo/embed/internal/dispatch"
	"github.com/waywo/embed/internal/ollama"
	"github.com/waywo/embed/internal/openai"
	"github.com/waywo/embed/internal/systemtest"
	"github.com/waywo/embed/internal/vector"
	"github.com/waywo/embed/internal/wire"
	"github.com/waywo/embed/internal/worker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeOllama is fault injection: the model's reply comes from a function,
// after cost per call (a model that takes time), or when ctx ends.
type fakeOllama struct {
	calls atomic.Int64
	cost  time.Duration
	fn    func(n int64, req *api.EmbedRequest) (*api.EmbedResponse, error)
	ctxFn func(ctx context.Context, req *api.EmbedRequest) (*api.EmbedResponse, error) // instead of fn
}

func (f *fakeOllama) Embed(ctx context.Context, req *api.EmbedRequest) (*api.EmbedResponse, error) {
	if f.cost > 0 {
		t := time.NewTimer(f.cost)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	n := f.calls.Add(1)
	if f.ctxFn != nil {
		return f.ctxFn(ctx, req)
	}
	return f.fn(n, req)
}

// vectorsFor gives every input a distinct 4-d vector derived from its length.
func vectorsFor(req *api.EmbedRequest) *api.EmbedResponse {
	in := req.Input.([]string)
	out := &api.EmbedResponse{Embeddings: make([][]float32, len(in)), PromptEvalCount: len(in)}
	for i, s := range in {
		out.Embeddings[i] = []float32{float32(len(s)), 1, 0, 0}
	}
	return out
}

const dims = 4

// fakeURL names a stand-in endpoint.
func fakeURL(host string) *url.URL { return &url.URL{Scheme: "http", Host: host} }

// small is the system these tests run on: 4-d vectors, a small queue.
var small = systemtest.Options{Dims: dims, Limits: wire.StreamLimits{MaxMsgs: 1000, MaxBytes: 1 << 26}}

// probed is a model whose readiness probe the test decides.
type probed struct {
	*ollama.Endpoint
	probe func(ctx context.Context, full bool) error
}

func (p probed) Probe(ctx context.Context, full bool) (vector.Fingerprint, error) {
	return p.Fingerprint(), p.probe(ctx, full)
}

// Prepare has nothing to check: the stand-in serves at once.
func (p probed) Prepare(context.Context) error { return nil }

type wopts struct {
	id         string // default "w1"
	ackWait    time.Duration
	fake       *fakeOllama
	probe      func(ctx context.Context, full bool) error
	maxDeliver int
	onBatch    func(worker.BatchInfo)
	calls      int // CallsPerHost
	batch      int // BatchSize, default 16
	handover   time.Duration
}

func startWorker(b *systemtest.Bundle, o wopts) (cancel func(), done <-chan error) {
	b.T.Helper()
	if o.probe == nil {
		o.probe = func(context.Context, bool) error { return nil }
	}
	model := ollama.NewEndpoint(fakeURL("fake:1"), ollama.Options{Model: "fake", Dims: dims, MaxBatch: 16, Timeout: 10 * time.Second, KeepAlive: -1, Truncate: true, Embedder: o.fake})
	r := b.StartWorker(systemtest.WorkerOptions{
		ID: cmp.Or(o.id, "w1"), Models: []worker.Model{probed{model, o.probe}},
		BatchSize: cmp.Or(o.batch, 16), CallsPerHost: o.calls, HandoverLead: o.handover, AckWait: cmp.Or(o.ackWait, 3*time.Second), MaxDeliver: o.maxDeliver,
		HeartbeatInterval: 20 * time.Millisecond, ProbeTimeout: 200 * time.Millisecond,
		Observer: worker.ObserverFuncs{OnBatch: o.onBatch},
	})
	return r.Stop, r.Done
}

func TestTransientModelErrorIsRetried(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	fake := &fakeOllama{fn: func(n int64, req *api.EmbedRequest) (*api.EmbedResponse, error) {
		if n == 1 {
			return nil, api.StatusError{StatusCode: http.StatusInternalServerError, ErrorMessage: "runner crashed"}
		}
		return vectorsFor(req), nil
	}}
	startWorker(b, wopts{fake: fake})
	res, err := b.Embed(20*time.Second, "one", "three")
	require.NoError(t, err)
	require.Equal(t, [][]float32{{3, 1, 0, 0}, {5, 1, 0, 0}}, res.Vectors)
	require.EqualValues(t, 2, fake.calls.Load())
	require.Eventually(t, func() bool { return b.Queued() == 0 }, 5*time.Second, 5*time.Millisecond)
}

func TestPersistentModelErrorAnswersAfterMaxDeliver(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	fake := &fakeOllama{fn: func(int64, *api.EmbedRequest) (*api.EmbedResponse, error) {
		return nil, errors.New("connection refused")
	}}
	startWorker(b, wopts{fake: fake, maxDeliver: 2})
	_, err := b.Embed(20*time.Second, "doc")
	require.ErrorIs(t, err, wire.ErrUnavailable)
	require.ErrorContains(t, err, "after 2 attempts")
	require.EqualValues(t, 2, fake.calls.Load())
	require.Eventually(t, func() bool { return b.Queued() == 0 }, 5*time.Second, 5*time.Millisecond,
		"a terminated job leaves the work queue")
	dls := b.DeadLetters("", 1)
	require.Equal(t, deadletter.KindJobs, dls[0].Kind)
	require.Equal(t, wire.JobsSubject, dls[0].Subject)
	require.Contains(t, dls[0].Reason, "after 2 attempts: ")
	require.Contains(t, dls[0].Reason, "connection refused")
	require.Equal(t, "2", dls[0].Deliveries)
	job, err := wire.DecodeJob(dls[0].Header, dls[0].Payload)
	require.NoError(t, err, "the dead letter keeps the job as it was")
	require.Equal(t, []string{"doc"}, job.Documents)
}

// deadLetters waits for n dead letters and returns them.

func TestWrongDimensionsAreNotPassedOn(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	fake := &fakeOllama{fn: func(int64, *api.EmbedRequest) (*api.EmbedResponse, error) {
		return &api.EmbedResponse{Embeddings: [][]float32{{1, 2, 3}}}, nil
	}}
	startWorker(b, wopts{fake: fake, maxDeliver: 1})
	_, err := b.Embed(20*time.Second, "doc")
	require.ErrorIs(t, err, wire.ErrUnavailable)
	require.ErrorContains(t, err, "3-dimensional")
}

func TestMalformedJobIsTerminatedAndAnswered(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	fake := &fakeOllama{fn: func(_ int64, req *api.EmbedRequest) (*api.EmbedResponse, error) { return vectorsFor(req), nil }}
	replies, err := b.NC.SubscribeSync(wire.ReplyPrefix + ".test.reply")
	require.NoError(t, err)

	m := nats.NewMsg(wire.JobsSubject)
	m.Header.Set(wire.HeaderRequestID, "r1")
	m.Header.Set(wire.HeaderReply, wire.ReplyPrefix+".test.reply")
	m.Header.Set(wire.HeaderOffset, "0")
	m.Data = []byte("not a job body")
	_, err = b.JS.PublishMsg(context.Background(), m)
	require.NoError(t, err)
	startWorker(b, wopts{fake: fake})

	rm, err := replies.NextMsg(10 * time.Second)
	require.NoError(t, err)
	r, err := wire.DecodeReply(rm.Header, rm.Data, 1, dims)
	require.NoError(t, err)
	require.Equal(t, wire.StatusBadJob, r.Err.Code)
	require.ErrorIs(t, r.Err, wire.ErrBadJob)
	require.Eventually(t, func() bool { return b.Queued() == 0 }, 5*time.Second, 5*time.Millisecond)
	require.Zero(t, fake.calls.Load())
	dls := b.DeadLetters("", 1)
	require.Contains(t, dls[0].Reason, "malformed job")
	require.Equal(t, "not a job body", string(dls[0].Payload))

	// The worker carries on with good work.
	res, err := b.Embed(10*time.Second, "ok")
	require.NoError(t, err)
	require.Len(t, res.Vectors, 1)
}

func TestExpiredJobIsDroppedUncomputed(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	fake := &fakeOllama{fn: func(_ int64, req *api.EmbedRequest) (*api.EmbedResponse, error) { return vectorsFor(req), nil }}
	job := wire.Job{RequestID: "late", ReplyTo: wire.ReplyPrefix + ".test.late", Deadline: time.Now().Add(-time.Second), Documents: []string{"x"}}
	_, err := b.JS.PublishMsg(context.Background(), job.Msg(wire.JobsSubject))
	require.NoError(t, err)
	startWorker(b, wopts{fake: fake})
	require.Eventually(t, func() bool { return b.Queued() == 0 }, 5*time.Second, 5*time.Millisecond)
	require.Zero(t, fake.calls.Load())
	dls, err := deadletter.List(context.Background(), b.JS, "", 10)
	require.NoError(t, err)
	require.Empty(t, dls, "a job nobody waits for is no failure")
}

// SIGTERM during a model call: the worker stops fetching, but the batch in
// flight finishes, is replied to and acked.
func TestStopFinishesTheBatchInFlight(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	started, release := make(chan struct{}), make(chan struct{})
	fake := &fakeOllama{fn: func(n int64, req *api.EmbedRequest) (*api.EmbedResponse, error) {
		if n == 1 {
			close(started)
			<-release
		}
		return vectorsFor(req), nil
	}}
	cancel, done := startWorker(b, wopts{fake: fake})

	type out struct {
		res dispatch.Result
		err error
	}
	got := make(chan out, 1)
	go func() {
		res, err := b.Embed(20*time.Second, "in flight")
		got <- out{res, err}
	}()
	<-started
	go cancel()
	// Run must not return while the call is in flight.
	select {
	case <-done:
		t.Fatal("worker returned with a batch in flight")
	default:
	}
	close(release)
	o := <-got
	require.NoError(t, o.err)
	require.Equal(t, [][]float32{{9, 1, 0, 0}}, o.res.Vectors)
	require.Eventually(t, func() bool { return b.Queued() == 0 }, 5*time.Second, 5*time.Millisecond, "the job was acked")
}

// A worker whose Ollama does not answer announces it is not ready, with the
// reason, takes no jobs, and recovers when Ollama is back.
func TestUnreadyEndpointTakesNoWork(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	var down atomic.Bool
	down.Store(true)
	fake := &fakeOllama{fn: func(_ int64, req *api.EmbedRequest) (*api.EmbedResponse, error) { return vectorsFor(req), nil }}
	startWorker(b, wopts{fake: fake, probe: func(context.Context, bool) error {
		if down.Load() {
			return errors.New("dial tcp 127.0.0.1:11434: connection refused")
		}
		return nil
	}})
	require.Eventually(t, func() bool {
		n, reason := b.Workers.Ready()
		return n == 0 && len(b.Workers.Live()) == 1 && reason != "" && strings.Contains(reason, "connection refused")
	}, 5*time.Second, 5*time.Millisecond)

	job := wire.Job{RequestID: "r", ReplyTo: wire.ReplyPrefix + ".test.r", Documents: []string{"x"}}
	_, err := b.JS.PublishMsg(context.Background(), job.Msg(wire.JobsSubject))
	require.NoError(t, err)
	down.Store(false)
	require.Eventually(t, func() bool { n, _ := b.Workers.Ready(); return n == 1 }, 5*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return b.Queued() == 0 }, 5*time.Second, 5*time.Millisecond)
	require.EqualValues(t, 1, fake.calls.Load())
}

// One worker with two endpoints keeps a batch in flight on each: the second
// batch starts while the first is still computing.
// One worker keeps a call in flight on every endpoint, then a second one
// queued on each (CallsPerHost 2): a batch goes to an endpoint with
// nothing in flight before it queues behind another call.
func TestWorkerDrivesEveryEndpoint(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	inFlight := make(chan string, 4)
	release := make(chan struct{})
	endpoint := func(name string) worker.Model {
		fake := &fakeOllama{fn: func(_ int64, req *api.EmbedRequest) (*api.EmbedResponse, error) {
			inFlight <- name
			<-release
			return vectorsFor(req), nil
		}}
		m := ollama.NewEndpoint(fakeURL(name), ollama.Options{Model: "fake", Dims: dims, MaxBatch: 1, Timeout: 10 * time.Second, Embedder: fake})
		return probed{m, func(context.Context, bool) error { return nil }}
	}
	stop := b.StartWorker(systemtest.WorkerOptions{
		ID: "w2", Models: []worker.Model{endpoint("gpu0"), endpoint("gpu1")}, BatchSize: 1, CallsPerHost: 2,
		AckWait: 3 * time.Second, HeartbeatInterval: 20 * time.Millisecond,
	}).Stop

	results := make(chan error, 4)
	send := func(docs ...string) {
		for _, d := range docs {
			go func() { _, err := b.Embed(20*time.Second, d); results <- err }()
		}
	}
	send("first", "second")
	got := map[string]int{<-inFlight: 1}
	got[<-inFlight]++
	require.Equal(t, map[string]int{"gpu0": 1, "gpu1": 1}, got, "both endpoints compute at once")
	send("third", "fourth")
	got[<-inFlight]++
	got[<-inFlight]++
	require.Equal(t, map[string]int{"gpu0": 2, "gpu1": 2}, got, "then a second call queues on each")
	require.Eventually(t, func() bool {
		for _, hb := range b.Workers.Live() {
			if hb.ID == "w2" && hb.Busy == 4 {
				return true
			}
		}
		return false
	}, 5*time.Second, 10*time.Millisecond, "heartbeats count the calls in flight")
	close(release)
	for range 4 {
		require.NoError(t, <-results)
	}
	stop()
}

// A batch that is not full does not queue behind a call in flight: it waits
// for the endpoint and takes in what arrived meanwhile (the behaviour of one
// call per endpoint, kept under light load).
func TestPartialBatchWaitsForTheEndpoint(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	type call struct {
		inputs       int
		afterRelease bool
	}
	calls := make(chan call, 4)
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	fake := &fakeOllama{fn: func(n int64, req *api.EmbedRequest) (*api.EmbedResponse, error) {
		released := false
		select {
		case <-release:
			released = true
		default:
		}
		calls <- call{inputs: len(req.Input.([]string)), afterRelease: released}
		if n == 1 {
			<-release
		}
		return vectorsFor(req), nil
	}}
	startWorker(b, wopts{fake: fake, calls: 2})
	t.Cleanup(releaseAll) // runs before the worker's stop: a failed test still ends
	results := make(chan error, 3)
	send := func(d string) {
		go func() { _, err := b.Embed(20*time.Second, d); results <- err }()
	}
	send("first")
	require.Equal(t, call{inputs: 1}, <-calls)
	send("second")
	send("third")
	cons, err := b.JS.Consumer(context.Background(), wire.JobsStream, wire.WorkersConsumer)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && b.Queued() == 3 && info.NumAckPending >= 2 // the worker holds "second"
	}, 5*time.Second, 5*time.Millisecond)
	releaseAll()
	require.Equal(t, call{inputs: 2, afterRelease: true}, <-calls, "one call for both, once the first is done")
	for range 3 {
		require.NoError(t, <-results)
	}
}

// Jobs of requests whose requester stopped waiting are dropped before they
// reach the model: ten callers that give up while the model is busy cost
// it nothing, and the next caller waits for one call, not eleven.
func TestAbandonedRequestsCostNoModelTime(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	release := make(chan struct{})
	var inputs atomic.Int64
	fake := &fakeOllama{fn: func(n int64, req *api.EmbedRequest) (*api.EmbedResponse, error) {
		if n == 1 {
			<-release // the first call holds the model until the callers below have given up
		}
		inputs.Add(int64(len(req.Input.([]string))))
		return vectorsFor(req), nil
	}}
	startWorker(b, wopts{fake: fake})

	first := make(chan error, 1)
	go func() { _, err := b.Embed(20*time.Second, "first"); first <- err }()
	require.Eventually(t, func() bool { return fake.calls.Load() == 1 }, 10*time.Second, 5*time.Millisecond)

	// Ten callers give up while their jobs wait behind the busy model.
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			_, err := b.Client.Embed(ctx, dispatch.Request{Documents: []string{strings.Repeat("x", 10+i)}})
			require.Error(t, err)
		})
	}
	wg.Wait()
	close(release)
	require.NoError(t, <-first)

	res, err := b.Embed(20*time.Second, "after")
	require.NoError(t, err)
	require.Equal(t, [][]float32{{5, 1, 0, 0}}, res.Vectors)
	require.EqualValues(t, 2, inputs.Load(), "only \"first\" and \"after\" reached the model")
	require.Eventually(t, func() bool { return b.Queued() == 0 }, 5*time.Second, 5*time.Millisecond,
		"the abandoned jobs left the queue")
}

// A query waiting behind a backfill goes into the very next batch, and
// that batch carries at most one short bulk job.
func TestInteractiveJobsGoFirst(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	release := make(chan struct{})
	var mu sync.Mutex
	var calls [][]string
	fake := &fakeOllama{fn: func(n int64, req *api.EmbedRequest) (*api.EmbedResponse, error) {
		if n == 1 {
			<-release
		}
		mu.Lock()
		calls = append(calls, append([]string(nil), req.Input.([]string)...))
		mu.Unlock()
		return vectorsFor(req), nil
	}}
	startWorker(b, wopts{fake: fake})

	// A backfill: 10 bulk requests of 16 documents (two jobs each).
	var wg sync.WaitGroup
	for i := range 10 {
		docs := make([]string, 16)
		for j := range docs {
			docs[j] = fmt.Sprintf("bulk %d.%d", i, j)
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := b.Client.Embed(ctx, dispatch.Request{Lane: wire.LaneBulk, Documents: docs})
			require.NoError(t, err)
		})
	}
	require.Eventually(t, func() bool { return fake.calls.Load() == 1 && b.Queued() >= 18 }, 10*time.Second, 5*time.Millisecond)
	query := make(chan error, 1)
	go func() { _, err := b.Embed(20*time.Second, "the query"); query <- err }()
	require.Eventually(t, func() bool {
		st, err := dispatch.ReadStats(context.Background(), b.JS, wire.LaneInteractive)
		return err == nil && st.Messages+uint64(st.AckPending) > 0
	}, 10*time.Second, 5*time.Millisecond)
	close(release)
	require.NoError(t, <-query)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	require.Greater(t, len(calls), 2)
	second := calls[1] // the first call was the one already running
	require.Contains(t, second, "the query", "the query goes into the next batch: %v", second)
	require.LessOrEqual(t, len(second)-1, wire.BulkJobDocuments, "with a query present, one short bulk job at most")
	bulk := 0
	for _, c := range calls {
		bulk += len(c)
	}
	require.Equal(t, 160+1, bulk, "every bulk document embedded once, and the query")
}

// Bulk never starves: under a flood of interactive requests that alone
// keep the model busy — batches full of them, or small ones back to back —
// a bulk request still completes.
func TestBulkProgressesUnderInteractiveFlood(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name             string
		clients, docsPer int
	}{{"FullBatches", 24, 4}, {"SmallBatches", 6, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bulkUnderFlood(t, tc.clients, tc.docsPer)
		})
	}
}

func bulkUnderFlood(t *testing.T, clients, docsPer int) {
	b := systemtest.Setup(t, small)
	var mu sync.Mutex
	var withBulk []bool // per model call: did it carry bulk documents
	// A model that takes time, so that interactive work queues up.
	fake := &fakeOllama{cost: 2 * time.Millisecond, fn: func(_ int64, req *api.EmbedRequest) (*api.EmbedResponse, error) {
		bulk := false
		for _, in := range req.Input.([]string) {
			bulk = bulk || strings.HasPrefix(in, "backfill")
		}
		mu.Lock()
		withBulk = append(withBulk, bulk)
		mu.Unlock()
		return vectorsFor(req), nil
	}}
	startWorker(b, wopts{fake: fake})
	ctx, stop := context.WithCancel(context.Background())
	var flood sync.WaitGroup
	var answered atomic.Int64
	for i := range clients {
		docs := []string{fmt.Sprintf("query %d", i), "b", "c", "d"}[:docsPer]
		flood.Go(func() {
			for ctx.Err() == nil {
				rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				_, err := b.Client.Embed(rctx, dispatch.Request{Documents: docs})
				cancel()
				if err == nil {
					answered.Add(1)
				}
			}
		})
	}
	require.Eventually(t, func() bool { return answered.Load() > 50 }, 20*time.Second, 5*time.Millisecond)
	docs := make([]string, 64)
	for j := range docs {
		docs[j] = fmt.Sprintf("backfill %d", j)
	}
	bctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := b.Client.Embed(bctx, dispatch.Request{Lane: wire.LaneBulk, Documents: docs})
	require.NoError(t, err, "the bulk request completes while the flood goes on")
	before := answered.Load()
	require.Eventually(t, func() bool { return answered.Load() > before }, 10*time.Second, 5*time.Millisecond, "the flood was still on")
	stop()
	flood.Wait()

	// Between its first and last batch, bulk was never left out of more
	// than 3 batches in a row (the worker's bulkEvery is 4).
	mu.Lock()
	defer mu.Unlock()
	first, last := slices.Index(withBulk, true), -1
	for i, bulk := range withBulk {
		if bulk {
			last = i
		}
	}
	run, longest := 0, 0
	for _, bulk := range withBulk[first : last+1] {
		if run = run + 1; bulk {
			run = 0
		}
		longest = max(longest, run)
	}
	t.Logf("%d model calls carried the bulk request's 8 jobs; at most %d in a row without", last-first+1, longest)
	require.LessOrEqual(t, longest, 3)
}

// A model call that runs far past what calls of its size take, while the
// server still answers its probes (a stuck GPU), counts as a stall: the
// batch goes back to the queue for another worker at once, the stalled
// server takes no jobs until a test embedding answers, then serves again.
func TestStalledCallIsHandedBack(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	var stuck atomic.Bool
	unstick := make(chan struct{})
	hanging := &fakeOllama{}
	hanging.ctxFn = func(ctx context.Context, req *api.EmbedRequest) (*api.EmbedResponse, error) {
		if stuck.Load() {
			select {
			case <-unstick:
			case <-ctx.Done(): // as an HTTP call gives up when its context ends
				return nil, ctx.Err()
			}
		}
		return vectorsFor(req), nil
	}
	var healthyCalls atomic.Int64
	healthy := &fakeOllama{fn: func(_ int64, req *api.EmbedRequest) (*api.EmbedResponse, error) {
		healthyCalls.Add(1)
		return vectorsFor(req), nil
	}}
	model := func(f *fakeOllama, host string) worker.Model {
		m := ollama.NewEndpoint(fakeURL(host), ollama.Options{Model: "fake", Dims: dims, MaxBatch: 16, Timeout: time.Minute, Embedder: f})
		return probed{m, func(context.Context, bool) error { return nil }}
	}
	var handedBack atomic.Int64
	obs := worker.ObserverFuncs{OnJobError: func(kind string) {
		if kind == "handed_back" {
			handedBack.Add(1)
		}
	}}
	b.StartWorker(systemtest.WorkerOptions{ID: "stuck", Models: []worker.Model{model(hanging, "gpu-stuck:1")},
		HeartbeatInterval: 20 * time.Millisecond, StallTimeout: 300 * time.Millisecond, Observer: obs})
	b.WaitReady(1)
	_, err := b.Embed(10*time.Second, "warm") // the stuck worker is the only one: it serves this
	require.NoError(t, err)
	b.StartWorker(systemtest.WorkerOptions{ID: "healthy", Models: []worker.Model{model(healthy, "gpu-ok:1")},
		HeartbeatInterval: 20 * time.Millisecond})
	b.WaitReady(2)

	stuck.Store(true)
	start := time.Now()
	for range 20 {
		res, err := b.Embed(10*time.Second, "during the stall")
		require.NoError(t, err)
		require.Len(t, res.Vectors, 1)
	}
	require.Less(t, time.Since(start), 5*time.Second, "the stuck call's job went to the other worker")
	require.Positive(t, handedBack.Load(), "the stuck worker gave a job back")
	require.Eventually(t, func() bool { n, _ := b.Workers.Ready(); return n == 1 }, 5*time.Second, 10*time.Millisecond,
		"the stalled worker is not ready: it takes no jobs")
	for _, w := range b.Workers.Live() {
		if w.ID == "stuck" {
			require.Contains(t, w.Reason, "stalled")
		}
	}

	close(unstick) // the GPU recovers: the test embedding answers
	require.Eventually(t, func() bool { n, _ := b.Workers.Ready(); return n == 2 }, 5*time.Second, 10*time.Millisecond,
		"ready again once a test embedding answers")
}

// engineStandIn is an OpenAI-compatible engine for these tests: it lists
// model "fake" and answers vectorsFor's vectors as base64, unless fault
// answers first.
func engineStandIn(t *testing.T, fault func(w http.ResponseWriter) bool) *url.URL {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/models":
			_, _ = io.WriteString(w, `{"object":"list","data":[{"id":"fake","object":"model","owned_by":"test"}]}`)
		case "/v1/embeddings":
			if fault != nil && fault(w) {
				return
			}
			var req struct{ Input []string }
			_ = json.NewDecoder(r.Body).Decode(&req)
			res := vectorsFor(&api.EmbedRequest{Input: req.Input})
			data := make([]map[string]any, len(req.Input))
			for i, v := range res.Embeddings {
				data[i] = map[string]any{"index": i, "embedding": base64.StdEncoding.EncodeToString(vector.Append(nil, v))}
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"model": "fake", "data": data, "usage": map[string]int{"prompt_tokens": len(req.Input)}})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL + "/v1")
	require.NoError(t, err)
	return u
}

// An engine that answers 429 is rested for its Retry-After: its batch goes
// to another engine at once, and it gets no call before the time is up.
func TestBusyEngineIsRestedAsItAsks(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, small)
	var mu sync.Mutex
	var busyAt, nextAt time.Time
	calls := 0
	busy := engineStandIn(t, func(w http.ResponseWriter) bool {
		mu.Lock()
		defer mu.Unlock()
		if calls++; calls == 1 {
			return false // Prepare's probe
		}
		if busyAt.IsZero() {
			busyAt = time.Now()
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, `{"error":{"message":"too many requests"}}`)
			return true
		}
		if nextAt.IsZero() {
			nextAt = time.Now()
		}
		return false
	})
	var otherCalls atomic.Int64
	other := engineStandIn(t, func(http.ResponseWriter) bool { otherCalls.Add(1); return false })
	var handedBack atomic.Int64
	models := []worker.Model{
		openai.NewEndpoint(busy, openai.Options{Model: "fake", Dims: dims, MaxBatch: 16, Timeout: 10 * time.Second}),
		openai.NewEndpoint(other, openai.Options{Model: "fake", Dims: dims, MaxBatch: 16, Timeout: 10 * time.Second}),
	}
	b.StartWorker(systemtest.WorkerOptions{ID: "w1", Models: models, HeartbeatInterval: 20 * time.Millisecond,
		Observer: worker.ObserverFuncs{OnJobError: func(kind string) {
			if kind == "handed_back" {
				handedBack.Add(1)
			}
		}}})
	b.WaitReady(1)
	for i := range 40 {
		res, err := b.Embed(10*time.Second, fmt.Sprintf("text %d", i))
		require.NoError(t, err)
		require.Equal(t, []float32{float32(len(fmt.Sprintf("text %d", i))), 1, 0, 0}, res.Vectors[0])
	}
	require.Positive(t, handedBack.Load(), "its batch went back to the queue")
	require.Positive(t, otherCalls.Load(), "the other engine served meanwhile")
	// Traffic goes on until the rested engine is called again.
	deadline := time.Now().Add(15 * time.Second)
	for {
		mu.Lock()
		again := !nextAt.IsZero()
		mu.Unlock()
		if again {
			break
		}
		require.True(t, time.Now().Before(deadline), "the rested engine is called again after its rest")
		_, err := b.Embed(10*time.Second, "more")
		require.NoError(t, err)
	}
	mu.Lock()
	defer mu.Unlock()
	require.GreaterOrEqual(t, nextAt.Sub(busyAt), 2*time.Second, "no call before the Retry-After was up")
}
