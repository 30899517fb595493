// The stages, in the order they start; each stops in reverse.

package system

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/deadletter"
	"github.com/waywo/embed/internal/dispatch"
	"github.com/waywo/embed/internal/metrics"
	"github.com/waywo/embed/internal/stage"
	"github.com/waywo/embed/internal/tracing"
	"github.com/waywo/embed/internal/wire"
	"github.com/waywo/embed/internal/workerproc"
)

// apiStages are the api's, in order: tracing (when OTEL_* ask for it), profiling, the core (the queue's api
// side, with the embedded nats-server and an in-process worker when
// NATS_URL is empty), then the sync and HTTP.
func (s *System) apiStages() []stage.Stage {
	return append(append([]stage.Stage{{Name: "tracing", Start: s.startTracing}, {Name: "pprof", Start: s.startPprof}}, s.coreStages()...),
		stage.Stage{Name: "sync", Start: s.startSync},
		stage.Stage{Name: "http", Start: s.startHTTP},
	)
}

// coreStages are what every mode of the api needs: NATS (embedded or
// not), the streams, the dead-letter watch, the workers' liveness, the
// dispatch client and, when this process runs one, the in-process worker.
func (s *System) coreStages() []stage.Stage {
	return []stage.Stage{
		{Name: "embedded nats-server", Start: s.startNATSServer},
		{Name: "nats", Start: s.connect},
		{Name: "streams", Start: s.ensureStreams},
		{Name: "dead letters", Start: s.watchDeadLetters},
		{Name: "workers", Start: s.watchWorkers},
		{Name: "dispatch", Start: s.startDispatch},
		{Name: "in-process worker", Start: s.startInProcessWorker},
	}
}

// startTracing starts tracing as the OTEL_* variables say.
func (s *System) startTracing(ctx context.Context) (func(), error) {
	return tracing.Start(ctx, "waywo-embed-api", s.Log)
}

func (s *System) startPprof(context.Context) (func(), error) {
	return metrics.ServePprof(s.Config.PprofAddr, s.Log)
}

// startNATSServer starts the embedded nats-server, without NATS_URL: it
// takes the data directory for this process, then serves JetStream from
// it, with the store guard watching its free space.
func (s *System) startNATSServer(context.Context) (func(), error) {
	cfg := s.Config
	if !cfg.OwnNATS() {
		return nil, nil
	}
	host, _ := os.Hostname()
	lock, err := broker.LockDataDir(cfg.DataDir, fmt.Sprintf("pid %d on %s, NATS at %s, since %s",
		os.Getpid(), host, cfg.NATSAddr, time.Now().UTC().Format(time.RFC3339)))
	if err != nil {
		return nil, err
	}
	s.Health = broker.NewStreamHealth("jobs stream", wire.JobsStream, s.Log)
	guard := broker.NewStoreGuard(cfg.DataDir, s.Health, s.Log)
	opts := broker.ServerOptions{
		StoreFault: guard.Fault,
		Addr:       cfg.NATSAddr,
		StoreDir:   cfg.DataDir, // nats-server adds jetstream/
		Log:        s.Log,
	}
	if cfg.NATSRolesOn() {
		roles, err := s.roles()
		if err != nil {
			lock.Release()
			return nil, err
		}
		opts.Roles = &roles
	} else {
		opts.User, opts.Password, opts.Token = cfg.NATSAuth.User, cfg.NATSAuth.Password, cfg.NATSAuth.Token
		s.Log.Warn("the embedded nats-server has one user, NATS_USER or NATS_TOKEN, who may do everything: read every queued text, answer in the workers' name, delete the streams. Unset them for the server's roles, each allowed only what it needs (docs/operations.md, \"Security\")")
	}
	s.Server, err = broker.StartServer(opts)
	if err != nil {
		lock.Release()
		return nil, err
	}
	ns := s.Server
	guarding := stage.Go(context.Background(), func(ctx context.Context) error { guard.Run(ctx, ns); return nil })
	s.Log.Info("embedded nats-server listening", zap.String("url", ns.ClientURL()))
	return func() {
		_ = guarding.Stop()
		ns.Shutdown()
		ns.WaitForShutdown()
		lock.Release()
	}, nil
}

// connect connects the api to NATS: the embedded server in-process, or
// NATS_URL.
func (s *System) connect(context.Context) (func(), error) {
	nc, err := s.dial("embed-api", wire.RoleAPI)
	if err != nil {
		return nil, err
	}
	if s.JS, err = broker.NewJetStream(nc); err != nil {
		nc.Close()
		return nil, err
	}
	s.NC = nc
	return func() { workerproc.Drain(nc, s.Log) }, nil
}

// dial opens a connection of its own to the system's NATS, as role.
func (s *System) dial(name string, role wire.Role) (*nats.Conn, error) {
	auth := s.APIAuth
	if role == wire.RoleWorker {
		auth = s.WorkerAuth
	}
	return broker.Connect(broker.Dial{URL: s.Config.NATSURL, Server: s.Server, Name: name, Auth: auth, Role: role, Wait: true, Log: s.Log})
}

// ensureStreams creates or updates both lanes' jobs streams and the
// dead-letter stream, placed by EMBED_STREAM_REPLICAS and
// EMBED_STREAM_TAGS. When the first try fails for a reason that can pass
// (NATS not reachable yet, a cluster still electing), it goes on trying in
// the background: the api serves meanwhile, and /health says what it waits
// for. A stream the servers refuse as configured, or vectors too large for
// their max payload, end the api with the reason: at once at start, or
// later through Fatal.
func (s *System) ensureStreams(ctx context.Context) (func(), error) {
	s.Placement = broker.Placement{Replicas: s.Config.StreamReplicas, Tags: s.Config.StreamTags}
	s.fatal = make(chan error, 1)
	s.setup = &setup{done: make(chan struct{})}
	first, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := s.createStreams(first)
	cancel()
	switch {
	case err == nil:
		close(s.setup.done)
		return nil, nil
	case errors.Is(err, broker.ErrStreamDoesNotFit):
		return nil, err
	}
	s.setup.note(err)
	bg := stage.Go(ctx, func(ctx context.Context) error {
		err := broker.Retry(ctx, "creating the streams", s.Log, func(ctx context.Context) error {
			err := s.createStreams(ctx)
			s.setup.note(err)
			return err
		})
		switch {
		case err == nil:
			close(s.setup.done)
		case ctx.Err() == nil:
			s.fail(err)
		}
		return nil
	})
	return func() { _ = bg.Stop() }, nil
}

func (s *System) createStreams(ctx context.Context) error {
	if st := s.NC.Status(); st != nats.CONNECTED {
		return fmt.Errorf("waiting for NATS at %s (connection %s)", broker.RedactURL(s.natsURL()), st)
	}
	if err := dispatch.CheckPayload(s.NC, s.Config.Dimensions); err != nil {
		return fmt.Errorf("%w: %w", broker.ErrStreamDoesNotFit, err)
	}
	if err := dispatch.EnsureJobsStreams(ctx, s.JS, s.limits(), s.Placement); err != nil {
		return err
	}
	return deadletter.Ensure(ctx, s.JS, s.Placement)
}

// natsURL is where the api's NATS is: NATS_URL, or the embedded server.
func (s *System) natsURL() string {
	if s.Server != nil {
		return s.Server.ClientURL()
	}
	return s.Config.NATSURL
}

// setup is how the streams' creation stands.
type setup struct {
	done chan struct{} // closed once the streams exist
	mu   sync.Mutex
	err  error // the latest failure, while not done
}

func (u *setup) note(err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.err = err
}

// Err says why the streams do not exist yet; nil once they do.
func (u *setup) Err() error {
	select {
	case <-u.done:
		return nil
	default:
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.err == nil {
		return errors.New("creating the streams")
	}
	return u.err
}

func (s *System) limits() wire.StreamLimits {
	return wire.StreamLimits{MaxMsgs: s.Config.StreamMaxMsgs, MaxBytes: s.Config.StreamMaxBytes}
}

// watchDeadLetters dead-letters what the workers' and the sync's consumers
// give up on.
func (s *System) watchDeadLetters(context.Context) (func(), error) {
	s.DeadLetters = &deadletter.Writer{JS: s.JS, Now: time.Now, Log: s.Log.Named("deadletter")}
	watched := append(deadletter.JobsConsumers(), deadletter.Watched{
		Stream: wire.ProjectsStream, Consumer: wire.ProjectsConsumer, Kind: deadletter.KindProjects,
	})
	sub, err := deadletter.WatchMaxDeliveries(s.NC, s.DeadLetters, watched, s.Log)
	if err != nil {
		return nil, err
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

func (s *System) watchWorkers(context.Context) (func(), error) {
	w, err := dispatch.WatchWorkers(s.NC, time.Now, s.Log)
	if err != nil {
		return nil, err
	}
	s.Workers = w
	return func() { _ = w.Close() }, nil
}

// startDispatch starts the api's client of the queue and the look at the
// jobs stream every 2 s that /health reports.
func (s *System) startDispatch(context.Context) (func(), error) {
	if s.Health == nil { // not made by the embedded server's store guard
		s.Health = broker.NewStreamHealth("jobs stream", wire.JobsStream, s.Log)
	}
	c, err := dispatch.NewClient(s.NC, s.JS, s.Config.Dimensions, time.Now, s.Log)
	if err != nil {
		return nil, err
	}
	c.Health = s.Health
	c.OneLane = !s.Config.Lanes
	s.Client = c
	watching := stage.Go(context.Background(), func(ctx context.Context) error { s.Health.Run(ctx, s.JS, 2*time.Second); return nil })
	return func() {
		_ = watching.Stop()
		_ = c.Close()
	}, nil
}

// startInProcessWorker runs a worker next to the api (EMBED_WORKER, by
// default only with the embedded nats-server), on a connection of its own
// so that its drain at shutdown does not cut the api's.
func (s *System) startInProcessWorker(ctx context.Context) (func(), error) {
	if !s.Config.InProcessWorker() {
		return nil, nil
	}
	nc, err := s.dial("embed-worker-"+s.Config.WorkerID, wire.RoleWorker)
	if err != nil {
		return nil, err
	}
	w, err := workerproc.New(nc, s.Config, s.Registry, s.Log)
	if err != nil {
		nc.Close()
		return nil, err
	}
	s.Worker = stage.Go(ctx, w.Run)
	return func() {
		if err := s.Worker.Stop(); err != nil && !errors.Is(err, context.Canceled) {
			s.workerErr = err
		}
		workerproc.Drain(nc, s.Log)
	}, nil
}
