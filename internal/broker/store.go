package broker

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/docker/go-units"
	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"
)

// Free space under the embedded store: below LowFreeBytes new jobs are
// refused before a write fails (the store acknowledges writes it has only
// buffered, so a write that fails later loses an acknowledged job); at
// RecoverFreeBytes they are taken again.
const (
	LowFreeBytes     = 8 << 20
	RecoverFreeBytes = 16 << 20
)

// StoreGuard keeps the embedded server's JetStream store serving through a
// full disk. nats-server marks a stream that failed to write as broken for
// good (it stores nothing more and acknowledges nothing), so after a fault
// the guard refuses publishes at once (through StreamHealth) and, once the
// disk has RecoverFreeBytes free again, restarts JetStream, which reloads
// every stream from its files.
type StoreGuard struct {
	dir    string // EMBED_DATA_DIR
	health *StreamHealth
	log    *zap.Logger
	faults chan string
}

// NewStoreGuard guards the store under dir, reporting to health.
func NewStoreGuard(dir string, health *StreamHealth, log *zap.Logger) *StoreGuard {
	return &StoreGuard{dir: dir, health: health, log: log.Named("store"), faults: make(chan string, 1)}
}

// Fault is ServerOptions.StoreFault: the server logged msg about a write.
func (g *StoreGuard) Fault(msg string) {
	select {
	case g.faults <- msg:
	default: // one is pending already
	}
}

// Run watches the free space every second and recovers ns's JetStream
// after each fault, until ctx ends.
func (g *StoreGuard) Run(ctx context.Context, ns *server.Server) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-g.faults:
			g.recover(ctx, ns, msg, true)
		case <-t.C:
			if free, err := FreeBytes(g.dir); err == nil && free < LowFreeBytes {
				g.recover(ctx, ns, fmt.Sprintf("only %s free", units.BytesSize(float64(free))), false)
			}
		}
	}
}

// recover refuses jobs until there is room again; broken says the store
// failed a write and JetStream must be restarted.
func (g *StoreGuard) recover(ctx context.Context, ns *server.Server, msg string, broken bool) {
	start := time.Now()
	free, _ := FreeBytes(g.dir)
	g.log.Error("JetStream store cannot write: refusing new jobs until it recovers",
		zap.String("dir", g.dir), zap.Uint64("free_bytes", free), zap.String("cause", msg))
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case m := <-g.faults:
			msg, broken = m, true
		default:
		}
		free, err := FreeBytes(g.dir)
		g.health.SetStoreFault(fmt.Errorf("the JetStream store under %s (EMBED_DATA_DIR) cannot write (%s free; it recovers by itself once %s are): %s",
			g.dir, units.BytesSize(float64(free)), units.BytesSize(RecoverFreeBytes), msg))
		if err == nil && free >= RecoverFreeBytes {
			err := error(nil)
			if broken {
				err = restartJetStream(ns, g.dir)
			}
			if err == nil {
				g.health.SetStoreFault(nil)
				g.log.Info("JetStream store recovered", zap.Uint64("free_bytes", free), zap.Bool("restarted", broken), zap.Duration("after", time.Since(start)))
				return
			}
			g.log.Error("JetStream restart failed; trying again", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// restartJetStream shuts JetStream down and starts it again over the same
// store, with the same limits.
func restartJetStream(ns *server.Server, dir string) error {
	cfg := ns.JetStreamConfig()
	if cfg == nil {
		return errors.New("JetStream is not running")
	}
	if err := ns.ShutdownJetStream(); err != nil {
		return fmt.Errorf("shut down JetStream: %w", err)
	}
	cfg.StoreDir = dir // EnableJetStream adds jetstream/ itself
	if err := ns.EnableJetStream(cfg); err != nil {
		return fmt.Errorf("start JetStream: %w", err)
	}
	return nil
}

// FreeBytes is the space an unprivileged writer has left under dir.
func FreeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}
