// Package system assembles the api from its settings: the api process,
// which without NATS_URL is the whole system (an embedded nats-server and
// an in-process worker beside the HTTP API and the sync), and the core the
// api's commands and the tests' bundle start. It is the one place that
// does, so production and tests cannot drift; a worker is assembled by
// internal/workerproc, which this uses for the in-process worker.
//
// The api starts in named stages, in the order they are listed in
// stages.go (read it top to bottom), and each stage that started registers
// its stop. Stopping runs the stops in reverse: HTTP first (requests in
// flight get their replies), then the sync (its batches in flight finish
// and are acked), then the in-process worker (its batch finishes and is
// acked), then the api's side of the queue, the NATS connection (drained)
// and last the embedded nats-server and its data directory.
package system

import (
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/deadletter"
	"github.com/waywo/embed/internal/dispatch"
	"github.com/waywo/embed/internal/metrics"
	"github.com/waywo/embed/internal/projectsync"
	"github.com/waywo/embed/internal/stage"
)

// System is what the stages built; a field is nil when its stage did not
// run in this mode.
type System struct {
	Config   config.Config
	Log      *zap.Logger
	Registry *prometheus.Registry

	Server      *server.Server // the embedded nats-server, without NATS_URL
	NC          *nats.Conn
	JS          jetstream.JetStream
	Placement   broker.Placement // of every stream
	DeadLetters *deadletter.Writer
	Workers     *dispatch.Liveness
	Health      *broker.StreamHealth
	Client      *dispatch.Client
	Worker      *stage.Background // the in-process worker
	Sync        *projectsync.Runner
	HTTPAddr    string // where the api listens, once it does
	// APIAuth and WorkerAuth are how the api's and its in-process
	// worker's connections log in to NATS (see natsAuth).
	APIAuth, WorkerAuth broker.Auth

	served    chan error // the HTTP server's end
	fatal     chan error // what ends the api by itself: streams the servers refuse
	setup     *setup     // the streams' creation
	workerErr error      // how the in-process worker ended
	stages    stage.Stack
}

func newSystem(cfg config.Config, log *zap.Logger) *System {
	s := &System{Config: cfg, Log: log, Registry: metrics.NewRegistry(), stages: stage.Stack{Log: log}}
	s.natsAuth()
	return s
}

// fail ends the api with err (RunAPI's answer); the first such error wins.
func (s *System) fail(err error) {
	select {
	case s.fatal <- err:
	default:
	}
}

// Stop stops every stage that started, last first, and returns the
// in-process worker's error, if it failed. It is safe to call again.
func (s *System) Stop() error {
	s.stages.Stop()
	return s.workerErr
}
