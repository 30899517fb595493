// The api's commands: the core stages alone, joining a running api.

package system

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/projectsync"
)

// Open starts the core stages (see coreStages), for a command such as
// reindex or deadletters; stop them with Stop. With joinRunning, an api
// whose embedded nats-server already answers at EMBED_NATS_ADDR is joined
// instead: its server and workers are used, and this process runs no
// worker.
func Open(ctx context.Context, cfg config.Config, log *zap.Logger, joinRunning bool) (*System, error) {
	var join *broker.Auth
	if cfg.OwnNATS() && joinRunning {
		if nc, err := broker.Connect(broker.Dial{URL: "nats://" + cfg.NATSAddr, Name: "embed-probe", Log: log}, nats.MaxReconnects(0)); err == nil || !broker.Unreachable(err) {
			if nc != nil {
				nc.Close()
			}
			auth, err := joinAuth(cfg)
			if err != nil {
				return nil, fmt.Errorf("join the api running at %s: %w", cfg.NATSAddr, err)
			}
			log.Info("using the running api's nats-server and workers", zap.String("addr", cfg.NATSAddr))
			cfg.NATSURL = "nats://" + cfg.NATSAddr
			cfg.Worker = "off"
			join = &auth
		}
	}
	s := newSystem(cfg, log)
	if join != nil {
		s.APIAuth = *join
	}
	if err := s.stages.Up(ctx, s.coreStages()...); err != nil {
		return nil, err
	}
	// A command needs the streams; it waits for them at most 30 s.
	wait, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	select {
	case <-s.setup.done:
		return s, nil
	case err := <-s.fatal:
		s.Stop()
		return nil, err
	case <-wait.Done():
		err := s.setup.Err()
		s.Stop()
		return nil, fmt.Errorf("the streams are not there after 30 s: %w", err)
	}
}

// OpenSyncer opens WAYWO_DB and returns the sync's syncer over it; the
// file closes when the system stops.
func (s *System) OpenSyncer(ctx context.Context) (*projectsync.Syncer, error) {
	syncer, err := projectsync.NewSyncer(ctx, s.syncOptions(), s.Client, s.Workers, s.Log)
	if err != nil {
		return nil, err
	}
	s.stages.Push("WAYWO_DB", func() { _ = syncer.Store.Close() })
	return syncer, nil
}

// WaitReady waits until a worker can take jobs, or fails after d.
func (s *System) WaitReady(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		n, why := s.Workers.Ready()
		if n > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no worker ready after %s: %s", d, why)
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
