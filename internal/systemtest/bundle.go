package systemtest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/queue"
	"github.com/waywo/embed/internal/worker"
)

// Bundle is the system as the api sees it, on real parts: an embedded
// nats-server (file store under the test's directory), the api's
// connection, the jobs and dead-letter streams, the queue client and the
// workers' liveness. Workers join with StartWorker.
type Bundle struct {
	T       testing.TB
	Log     *zap.Logger
	Server  *server.Server
	NC      *nats.Conn
	JS      jetstream.JetStream
	Client  *queue.Client
	Workers *queue.Liveness
	Dims    int
	Limits  queue.StreamLimits
}

// Options shape a Bundle; zero values take the defaults.
type Options struct {
	Dims     int                // vector length the client checks; required
	Limits   queue.StreamLimits // default 10,000 jobs, 1 GiB
	LogLevel zapcore.Level      // default warn
}

// Setup starts a Bundle; everything stops when the test ends.
func Setup(tb testing.TB, o Options) *Bundle {
	tb.Helper()
	if o.Limits.MaxMsgs == 0 {
		o.Limits = queue.StreamLimits{MaxMsgs: 10_000, MaxBytes: 1 << 30}
	}
	if o.LogLevel == 0 {
		o.LogLevel = zap.WarnLevel
	}
	log := zaptest.NewLogger(tb, zaptest.Level(o.LogLevel))
	ns, err := queue.StartServer(queue.ServerOptions{Addr: "127.0.0.1:0", StoreDir: tb.TempDir()})
	require.NoError(tb, err)
	tb.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := queue.Connect("", "test-api", ns, config.NATSAuth{}, log)
	require.NoError(tb, err)
	tb.Cleanup(nc.Close)
	js, err := queue.NewJetStream(nc)
	require.NoError(tb, err)
	ctx := context.Background()
	err = queue.EnsureJobsStreams(ctx, js, o.Limits, queue.Placement{})
	require.NoError(tb, err)
	require.NoError(tb, queue.EnsureDeadLetters(ctx, js, queue.Placement{}))
	reg, err := queue.WatchWorkers(nc, time.Now, log)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = reg.Close() })
	client, err := queue.NewClient(nc, js, o.Dims, time.Now, log)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = client.Close() })
	return &Bundle{T: tb, Log: log, Server: ns, NC: nc, JS: js, Client: client, Workers: reg, Dims: o.Dims, Limits: o.Limits}
}

// WorkerOptions shape a worker; zero values take the defaults.
type WorkerOptions struct {
	ID                string // default "w-" + the test's name
	Models            []worker.Model
	BatchSize         int           // default 32
	CallsPerHost      int           // default 1
	AckWait           time.Duration // default 30 s
	MaxDeliver        int           // default 5
	HeartbeatInterval time.Duration // default 50 ms
	ProbeTimeout      time.Duration // default 500 ms
	Observer          worker.Observer
}

// Running is a started worker.
type Running struct {
	Stop func()       // a graceful stop: batches in flight finish; also a cleanup
	Done <-chan error // the worker's Run error, once it returns
	Conn *nats.Conn   // its own connection (close it to make it vanish, as when killed)
}

// StartWorker runs a worker on its own connection until the test ends or
// Stop is called.
func (b *Bundle) StartWorker(o WorkerOptions) *Running {
	tb := b.T
	tb.Helper()
	if o.ID == "" {
		o.ID = "w-" + sanitize(tb.Name())
	}
	if o.BatchSize == 0 {
		o.BatchSize = 32
	}
	if o.AckWait == 0 {
		o.AckWait = 30 * time.Second
	}
	if o.MaxDeliver == 0 {
		o.MaxDeliver = 5
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = 50 * time.Millisecond
	}
	if o.ProbeTimeout == 0 {
		o.ProbeTimeout = 500 * time.Millisecond
	}
	wnc, err := queue.Connect("", "test-worker", b.Server, config.NATSAuth{}, b.Log)
	require.NoError(tb, err)
	wjs, err := queue.NewJetStream(wnc)
	require.NoError(tb, err)
	w := worker.New(wnc, wjs, o.Models, worker.Options{
		ID: o.ID, Dims: b.Dims, QueryTask: "Given a question, retrieve passages that answer the question",
		BatchSize: o.BatchSize, CallsPerHost: o.CallsPerHost,
		Consumer:          queue.ConsumerOptions{AckWait: o.AckWait, MaxDeliver: o.MaxDeliver},
		Limits:            b.Limits,
		HeartbeatInterval: o.HeartbeatInterval, ProbeTimeout: o.ProbeTimeout,
		ShutdownTimeout: 10 * time.Second, Observer: o.Observer,
	}, b.Log)
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() {
		err := w.Run(ctx)
		_ = wnc.Drain()
		wnc.Close()
		ch <- err
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			require.NoError(tb, <-ch)
		})
	}
	tb.Cleanup(stop)
	return &Running{Stop: stop, Done: ch, Conn: wnc}
}

// WaitReady waits until n workers can embed.
func (b *Bundle) WaitReady(n int) {
	b.T.Helper()
	require.Eventually(b.T, func() bool { r, _ := b.Workers.Ready(); return r >= n }, 30*time.Second, 10*time.Millisecond)
}

// Queued is how many jobs the jobs streams (both lanes) hold.
func (b *Bundle) Queued() uint64 {
	b.T.Helper()
	var n uint64
	for _, lane := range queue.Lanes {
		st, err := queue.ReadStats(context.Background(), b.JS, lane)
		require.NoError(b.T, err)
		n += st.Messages
	}
	return n
}

// DeadLetters waits for n dead letters of kind ("" for any) and returns
// them; more than n fails.
func (b *Bundle) DeadLetters(kind queue.DeadLetterKind, n int) []queue.StoredDeadLetter {
	b.T.Helper()
	var dls []queue.StoredDeadLetter
	require.Eventually(b.T, func() bool {
		var err error
		dls, err = queue.ListDeadLetters(context.Background(), b.JS, kind, 1000)
		return err == nil && len(dls) >= n
	}, 10*time.Second, 10*time.Millisecond)
	require.Len(b.T, dls, n)
	return dls
}

func sanitize(name string) string {
	out := []byte(name)
	for i, c := range out {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			out[i] = '-'
		}
	}
	return string(out)
}

// Embed sends one request of docs through the queue and waits up to
// timeout for its vectors.
func (b *Bundle) Embed(timeout time.Duration, docs ...string) (queue.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return b.Client.Embed(ctx, queue.Request{Documents: docs})
}
