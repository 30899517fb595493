// Package systemtest is the system as the tests of every package see it,
// built by the api's assembly (internal/system) from a configuration, on
// real parts: an embedded nats-server (file store under the test's
// directory) with the streams, the dead-letter watch, the workers'
// liveness and the dispatch client (Bundle); workers over any model
// servers, with the options a configured worker gets (StartWorker).
package systemtest

import (
	"cmp"
	"context"
	"strconv"
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

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/deadletter"
	"github.com/waywo/embed/internal/dispatch"
	"github.com/waywo/embed/internal/system"
	"github.com/waywo/embed/internal/wire"
	"github.com/waywo/embed/internal/worker"
	"github.com/waywo/embed/internal/workerproc"
)

// Bundle is the system as the api sees it: the core the api's assembly
// starts (system.Open) without an in-process worker or the sync. Workers
// join with StartWorker.
type Bundle struct {
	T       testing.TB
	Log     *zap.Logger
	Config  config.Config
	System  *system.System
	Server  *server.Server
	NC      *nats.Conn
	JS      jetstream.JetStream
	Client  *dispatch.Client
	Workers *dispatch.Liveness
	Dims    int
	Limits  wire.StreamLimits
}

// Options shape a Bundle; zero values take the defaults.
type Options struct {
	Dims     int               // vector length the client checks; required
	Limits   wire.StreamLimits // default 10,000 jobs, 1 GiB
	LogLevel zapcore.Level     // default warn
}

// Setup starts a Bundle; everything stops when the test ends.
func Setup(tb testing.TB, o Options) *Bundle {
	tb.Helper()
	if o.Limits.MaxMsgs == 0 {
		o.Limits = wire.StreamLimits{MaxMsgs: 10_000, MaxBytes: 1 << 30}
	}
	if o.LogLevel == 0 {
		o.LogLevel = zap.WarnLevel
	}
	log := zaptest.NewLogger(tb, zaptest.Level(o.LogLevel))
	env := map[string]string{
		"EMBED_NATS_ADDR":        "127.0.0.1:0",
		"EMBED_DATA_DIR":         tb.TempDir(),
		"EMBED_WORKER":           "off",
		"EMBED_SYNC":             "false",
		"EMBED_DIMENSIONS":       strconv.Itoa(o.Dims),
		"EMBED_STREAM_MAX_MSGS":  strconv.FormatInt(o.Limits.MaxMsgs, 10),
		"EMBED_STREAM_MAX_BYTES": strconv.FormatInt(o.Limits.MaxBytes, 10),
	}
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	require.NoError(tb, err)
	sys, err := system.Open(context.Background(), cfg, log, false)
	require.NoError(tb, err)
	tb.Cleanup(func() { require.NoError(tb, sys.Stop()) })
	return &Bundle{T: tb, Log: log, Config: cfg, System: sys, Server: sys.Server, NC: sys.NC, JS: sys.JS,
		Client: sys.Client, Workers: sys.Workers, Dims: o.Dims, Limits: o.Limits}
}

// Dial opens a connection to the bundle's server as role (the api's and
// the worker's roles with their passwords, a publisher without
// credentials), closed when the test ends. extra options come last.
func (b *Bundle) Dial(role wire.Role, name string, extra ...nats.Option) *nats.Conn {
	b.T.Helper()
	var auth broker.Auth
	switch role {
	case wire.RoleAPI:
		auth = b.System.APIAuth
	case wire.RoleWorker:
		auth = b.System.WorkerAuth
	}
	nc, err := broker.Connect(broker.Dial{Server: b.Server, Name: name, Auth: auth, Role: role, Log: b.Log}, extra...)
	require.NoError(b.T, err)
	b.T.Cleanup(nc.Close)
	return nc
}

// WorkerOptions shape a worker; zero values take the defaults. The rest of
// its options are those a configured worker gets (workerproc.Options).
type WorkerOptions struct {
	ID                string // default "w-" + the test's name
	Models            []worker.Model
	BatchSize         int           // default 32
	CallsPerHost      int           // default 1
	HandoverLead      time.Duration // default EMBED_HANDOVER_LEAD's; negative: off
	AckWait           time.Duration // default 30 s
	MaxDeliver        int           // default 5
	HeartbeatInterval time.Duration // default 50 ms
	ProbeTimeout      time.Duration // default 500 ms
	StallTimeout      time.Duration // default EMBED_STALL_TIMEOUT's
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
	cfg := b.Config
	cfg.WorkerID = o.ID
	if cfg.WorkerID == "" {
		cfg.WorkerID = "w-" + sanitize(tb.Name())
	}
	cfg.BatchSize = cmp.Or(o.BatchSize, 32)
	cfg.CallsPerHost = cmp.Or(o.CallsPerHost, 1)
	if o.HandoverLead != 0 {
		cfg.HandoverLead = max(o.HandoverLead, 0)
	}
	cfg.AckWait = cmp.Or(o.AckWait, 30*time.Second)
	cfg.MaxDeliver = cmp.Or(o.MaxDeliver, 5)
	cfg.HeartbeatInterval = cmp.Or(o.HeartbeatInterval, 50*time.Millisecond)
	cfg.ShutdownTimeout = 10 * time.Second
	wnc := b.Dial(wire.RoleWorker, "test-worker")
	wjs, err := broker.NewJetStream(wnc)
	require.NoError(tb, err)
	opts := workerproc.Options(cfg)
	opts.ProbeTimeout = cmp.Or(o.ProbeTimeout, 500*time.Millisecond)
	opts.StallTimeout = cmp.Or(o.StallTimeout, opts.StallTimeout)
	opts.Observer = o.Observer
	w := worker.New(wnc, wjs, o.Models, opts, b.Log)
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
	for _, lane := range wire.Lanes {
		st, err := dispatch.ReadStats(context.Background(), b.JS, lane)
		require.NoError(b.T, err)
		n += st.Messages
	}
	return n
}

// DeadLetters waits for n dead letters of kind ("" for any) and returns
// them; more than n fails.
func (b *Bundle) DeadLetters(kind deadletter.Kind, n int) []deadletter.Stored {
	b.T.Helper()
	var dls []deadletter.Stored
	require.Eventually(b.T, func() bool {
		var err error
		dls, err = deadletter.List(context.Background(), b.JS, kind, 1000)
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
func (b *Bundle) Embed(timeout time.Duration, docs ...string) (dispatch.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return b.Client.Embed(ctx, dispatch.Request{Documents: docs})
}
