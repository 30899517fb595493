package queue

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/ollama/ollama/api"
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

// fakeOllama is fault injection: the model's reply comes from a function.
type fakeOllama struct {
	calls atomic.Int64
	fn    func(n int64, req *api.EmbedRequest) (*api.EmbedResponse, error)
}

func (f *fakeOllama) Embed(ctx context.Context, req *api.EmbedRequest) (*api.EmbedResponse, error) {
	return f.fn(f.calls.Add(1), req)
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

type wopts struct {
	fake       *fakeOllama
	probe      func(ctx context.Context, full bool) error
	maxDeliver int
	onBatch    func(BatchInfo)
	calls      int // CallsPerEndpoint
}

func (b *qbundle) worker(o wopts) (cancel func(), done <-chan error) {
	b.t.Helper()
	if o.probe == nil {
		o.probe = func(context.Context, bool) error { return nil }
	}
	if o.maxDeliver == 0 {
		o.maxDeliver = 5
	}
	wnc, err := Connect("", "test-worker", b.ns, config.NATSAuth{}, b.log)
	require.NoError(b.t, err)
	wjs, err := jetstream.New(wnc)
	require.NoError(b.t, err)
	model := embed.NewModel(o.fake, "fake:1", embed.ModelOptions{Name: "fake", Dims: dims, MaxBatch: 16, Timeout: 10 * time.Second, KeepAlive: -1, Truncate: true})
	w := NewWorker(wnc, wjs, []Endpoint{{Model: model, Probe: o.probe}}, WorkerOptions{
		ID: "w1", Dims: dims, QueryTask: "task", BatchSize: 16, CallsPerEndpoint: o.calls,
		Consumer:          ConsumerOptions{AckWait: 3 * time.Second, MaxDeliver: o.maxDeliver},
		Limits:            StreamLimits{MaxMsgs: 1000, MaxBytes: 1 << 26},
		HeartbeatInterval: 20 * time.Millisecond, ProbeTimeout: 200 * time.Millisecond,
		ShutdownTimeout: 10 * time.Second, Observer: ObserverFuncs{OnBatch: o.onBatch},
	}, b.log)
	ctx, stop := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() {
		ch <- w.Run(ctx)
		wnc.Close()
	}()
	var once sync.Once
	cancel = func() {
		once.Do(func() {
			stop()
			require.NoError(b.t, <-ch)
		})
	}
	b.t.Cleanup(cancel)
	return cancel, ch
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

func TestTransientModelErrorIsRetried(t *testing.T) {
	t.Parallel()
	b := qsetup(t)
	fake := &fakeOllama{fn: func(n int64, req *api.EmbedRequest) (*api.EmbedResponse, error) {
		if n == 1 {
			return nil, api.StatusError{StatusCode: http.StatusInternalServerError, ErrorMessage: "runner crashed"}
		}
		return vectorsFor(req), nil
	}}
	b.worker(wopts{fake: fake})
	res, err := b.embed(20*time.Second, "one", "three")
	require.NoError(t, err)
	require.Equal(t, [][]float32{{3, 1, 0, 0}, {5, 1, 0, 0}}, res.Vectors)
	require.EqualValues(t, 2, fake.calls.Load())
	require.Eventually(t, func() bool { return b.queued() == 0 }, 5*time.Second, 5*time.Millisecond)
}

func TestPersistentModelErrorAnswersAfterMaxDeliver(t *testing.T) {
	t.Parallel()
	b := qsetup(t)
	fake := &fakeOllama{fn: func(int64, *api.EmbedRequest) (*api.EmbedResponse, error) {
		return nil, errors.New("connection refused")
	}}
	b.worker(wopts{fake: fake, maxDeliver: 2})
	_, err := b.embed(20*time.Second, "doc")
	require.ErrorIs(t, err, embed.ErrUnavailable)
	require.ErrorContains(t, err, "after 2 attempts")
	require.EqualValues(t, 2, fake.calls.Load())
	require.Eventually(t, func() bool { return b.queued() == 0 }, 5*time.Second, 5*time.Millisecond,
		"a terminated job leaves the work queue")
	dls := b.deadLetters(1)
	require.Equal(t, "jobs", dls[0].Kind)
	require.Equal(t, JobsSubject, dls[0].Subject)
	require.Contains(t, dls[0].Reason, "after 2 attempts: ")
	require.Contains(t, dls[0].Reason, "connection refused")
	require.Equal(t, "2", dls[0].Deliveries)
	job, err := DecodeJob(dls[0].Header, dls[0].Payload)
	require.NoError(t, err, "the dead letter keeps the job as it was")
	require.Equal(t, []string{"doc"}, job.Documents)
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

func TestWrongDimensionsAreNotPassedOn(t *testing.T) {
	t.Parallel()
	b := qsetup(t)
	fake := &fakeOllama{fn: func(int64, *api.EmbedRequest) (*api.EmbedResponse, error) {
		return &api.EmbedResponse{Embeddings: [][]float32{{1, 2, 3}}}, nil
	}}
	b.worker(wopts{fake: fake, maxDeliver: 1})
	_, err := b.embed(20*time.Second, "doc")
	require.ErrorIs(t, err, embed.ErrUnavailable)
	require.ErrorContains(t, err, "3-dimensional")
}

func TestMalformedJobIsTerminatedAndAnswered(t *testing.T) {
	t.Parallel()
	b := qsetup(t)
	fake := &fakeOllama{fn: func(_ int64, req *api.EmbedRequest) (*api.EmbedResponse, error) { return vectorsFor(req), nil }}
	replies, err := b.nc.SubscribeSync("test.reply")
	require.NoError(t, err)

	m := nats.NewMsg(JobsSubject)
	m.Header.Set(HeaderRequestID, "r1")
	m.Header.Set(HeaderReply, "test.reply")
	m.Header.Set(HeaderOffset, "0")
	m.Data = []byte("not a job body")
	_, err = b.js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
	b.worker(wopts{fake: fake})

	rm, err := replies.NextMsg(10 * time.Second)
	require.NoError(t, err)
	r, err := DecodeReply(rm.Header, rm.Data, 1, dims)
	require.NoError(t, err)
	require.Equal(t, StatusBadJob, r.Err.Code)
	require.ErrorIs(t, r.Err, ErrBadJob)
	require.Eventually(t, func() bool { return b.queued() == 0 }, 5*time.Second, 5*time.Millisecond)
	require.Zero(t, fake.calls.Load())
	dls := b.deadLetters(1)
	require.Contains(t, dls[0].Reason, "malformed job")
	require.Equal(t, "not a job body", string(dls[0].Payload))

	// The worker carries on with good work.
	res, err := b.embed(10*time.Second, "ok")
	require.NoError(t, err)
	require.Len(t, res.Vectors, 1)
}

func TestExpiredJobIsDroppedUncomputed(t *testing.T) {
	t.Parallel()
	b := qsetup(t)
	fake := &fakeOllama{fn: func(_ int64, req *api.EmbedRequest) (*api.EmbedResponse, error) { return vectorsFor(req), nil }}
	job := Job{RequestID: "late", ReplyTo: "test.late", Deadline: time.Now().Add(-time.Second), Documents: []string{"x"}}
	_, err := b.js.PublishMsg(context.Background(), job.Msg(JobsSubject))
	require.NoError(t, err)
	b.worker(wopts{fake: fake})
	require.Eventually(t, func() bool { return b.queued() == 0 }, 5*time.Second, 5*time.Millisecond)
	require.Zero(t, fake.calls.Load())
	dls, err := ListDeadLetters(context.Background(), b.js, "", 10)
	require.NoError(t, err)
	require.Empty(t, dls, "a job nobody waits for is no failure")
}

// SIGTERM during a model call: the worker stops fetching, but the batch in
// flight finishes, is replied to and acked.
func TestStopFinishesTheBatchInFlight(t *testing.T) {
	t.Parallel()
	b := qsetup(t)
	started, release := make(chan struct{}), make(chan struct{})
	fake := &fakeOllama{fn: func(n int64, req *api.EmbedRequest) (*api.EmbedResponse, error) {
		if n == 1 {
			close(started)
			<-release
		}
		return vectorsFor(req), nil
	}}
	cancel, done := b.worker(wopts{fake: fake})

	type out struct {
		res Result
		err error
	}
	got := make(chan out, 1)
	go func() {
		res, err := b.embed(20*time.Second, "in flight")
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
	require.Eventually(t, func() bool { return b.queued() == 0 }, 5*time.Second, 5*time.Millisecond, "the job was acked")
}

// A worker whose Ollama does not answer announces it is not ready, with the
// reason, takes no jobs, and recovers when Ollama is back.
func TestUnreadyEndpointTakesNoWork(t *testing.T) {
	t.Parallel()
	b := qsetup(t)
	var down atomic.Bool
	down.Store(true)
	fake := &fakeOllama{fn: func(_ int64, req *api.EmbedRequest) (*api.EmbedResponse, error) { return vectorsFor(req), nil }}
	b.worker(wopts{fake: fake, probe: func(context.Context, bool) error {
		if down.Load() {
			return errors.New("dial tcp 127.0.0.1:11434: connection refused")
		}
		return nil
	}})
	require.Eventually(t, func() bool {
		n, reason := b.reg.Ready()
		return n == 0 && len(b.reg.Live()) == 1 && reason != "" && strings.Contains(reason, "connection refused")
	}, 5*time.Second, 5*time.Millisecond)

	job := Job{RequestID: "r", ReplyTo: "test.r", Documents: []string{"x"}}
	_, err := b.js.PublishMsg(context.Background(), job.Msg(JobsSubject))
	require.NoError(t, err)
	down.Store(false)
	require.Eventually(t, func() bool { n, _ := b.reg.Ready(); return n == 1 }, 5*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return b.queued() == 0 }, 5*time.Second, 5*time.Millisecond)
	require.EqualValues(t, 1, fake.calls.Load())
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

// One worker with two endpoints keeps a batch in flight on each: the second
// batch starts while the first is still computing.
// One worker keeps a call in flight on every endpoint, then a second one
// queued on each (CallsPerEndpoint 2): a batch goes to an endpoint with
// nothing in flight before it queues behind another call.
func TestWorkerDrivesEveryEndpoint(t *testing.T) {
	t.Parallel()
	b := qsetup(t)
	inFlight := make(chan string, 4)
	release := make(chan struct{})
	endpoint := func(name string) Endpoint {
		fake := &fakeOllama{fn: func(_ int64, req *api.EmbedRequest) (*api.EmbedResponse, error) {
			inFlight <- name
			<-release
			return vectorsFor(req), nil
		}}
		m := embed.NewModel(fake, name, embed.ModelOptions{Name: "fake", Dims: dims, MaxBatch: 1, Timeout: 10 * time.Second})
		return Endpoint{Model: m, Probe: func(context.Context, bool) error { return nil }}
	}
	wnc, err := Connect("", "test-worker", b.ns, config.NATSAuth{}, b.log)
	require.NoError(t, err)
	wjs, err := jetstream.New(wnc)
	require.NoError(t, err)
	w := NewWorker(wnc, wjs, []Endpoint{endpoint("gpu0"), endpoint("gpu1")}, WorkerOptions{
		ID: "w2", Dims: dims, BatchSize: 1, CallsPerEndpoint: 2,
		Consumer:          ConsumerOptions{AckWait: 3 * time.Second, MaxDeliver: 5},
		Limits:            StreamLimits{MaxMsgs: 1000, MaxBytes: 1 << 26},
		HeartbeatInterval: 20 * time.Millisecond, ShutdownTimeout: 10 * time.Second,
	}, b.log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx); wnc.Close() }()

	results := make(chan error, 4)
	send := func(docs ...string) {
		for _, d := range docs {
			go func() { _, err := b.embed(20*time.Second, d); results <- err }()
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
		for _, hb := range b.reg.Live() {
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
	cancel()
	require.NoError(t, <-done)
}

// A batch that is not full does not queue behind a call in flight: it waits
// for the endpoint and takes in what arrived meanwhile (the behaviour of one
// call per endpoint, kept under light load).
func TestPartialBatchWaitsForTheEndpoint(t *testing.T) {
	t.Parallel()
	b := qsetup(t)
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
	b.worker(wopts{fake: fake, calls: 2})
	t.Cleanup(releaseAll) // runs before the worker's stop: a failed test still ends
	results := make(chan error, 3)
	send := func(d string) {
		go func() { _, err := b.embed(20*time.Second, d); results <- err }()
	}
	send("first")
	require.Equal(t, call{inputs: 1}, <-calls)
	send("second")
	send("third")
	cons, err := b.js.Consumer(context.Background(), JobsStream, WorkersConsumer)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && b.queued() == 3 && info.NumAckPending >= 2 // the worker holds "second"
	}, 5*time.Second, 5*time.Millisecond)
	releaseAll()
	require.Equal(t, call{inputs: 2, afterRelease: true}, <-calls, "one call for both, once the first is done")
	for range 3 {
		require.NoError(t, <-results)
	}
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
