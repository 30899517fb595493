package dispatch

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/vector"
	"github.com/waywo/embed/internal/wire"
)

// WorkerStatus is a worker as the api last heard of it.
type WorkerStatus struct {
	wire.Heartbeat
	LastSeen time.Time `json:"last_seen"`
}

// Liveness tracks live workers from their heartbeats. The api's /health and
// /embed ask it whether anything can serve an embedding now.
type Liveness struct {
	nc  *nats.Conn
	sub *nats.Subscription
	now func() time.Time
	log *zap.Logger

	mu      sync.Mutex
	workers map[string]WorkerStatus
}

// WatchWorkers subscribes to heartbeats and pings the workers so that those
// already running answer at once instead of at their next interval.
func WatchWorkers(nc *nats.Conn, now func() time.Time, log *zap.Logger) (*Liveness, error) {
	r := &Liveness{nc: nc, now: now, log: log.Named("workers"), workers: map[string]WorkerStatus{}}
	sub, err := nc.Subscribe(wire.HeartbeatSubject, r.onHeartbeat)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", wire.HeartbeatSubject, err)
	}
	r.sub = sub
	if err := nc.Publish(wire.PingSubject, nil); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("ping workers: %w", err)
	}
	return r, nil
}

func (r *Liveness) onHeartbeat(m *nats.Msg) {
	var hb wire.Heartbeat
	if err := json.Unmarshal(m.Data, &hb); err != nil || hb.ID == "" || hb.TTL <= 0 {
		r.log.Warn("ignoring malformed heartbeat", zap.Error(err), zap.Int("bytes", len(m.Data)))
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	prev, known := r.workers[hb.ID]
	if hb.Stopping {
		delete(r.workers, hb.ID)
		r.log.Info("worker left", zap.String("worker", hb.ID))
		return
	}
	r.workers[hb.ID] = WorkerStatus{Heartbeat: hb, LastSeen: r.now()}
	switch {
	case !known || prev.LastSeen.Add(prev.TTL).Before(r.now()):
		r.log.Info("worker joined", zap.String("worker", hb.ID), zap.Bool("ready", hb.Ready),
			zap.String("model", hb.Model), zap.Strings("endpoints", hb.Endpoints))
	case prev.Ready != hb.Ready:
		r.log.Info("worker readiness changed", zap.String("worker", hb.ID), zap.Bool("ready", hb.Ready), zap.String("reason", hb.Reason))
	}
	if d := hb.Fingerprint.Digest; d != "" && d != prev.Fingerprint.Digest {
		r.warnMixed(hb)
	}
}

// warnMixed says so when a worker starts serving a model digest that another
// live worker does not: their vectors are not comparable, and the sync
// counts the majority's as current. It runs once per change of a worker's
// digest, so a rolling change logs a line per worker, not per heartbeat.
func (r *Liveness) warnMixed(hb wire.Heartbeat) {
	now := r.now()
	for id, w := range r.workers {
		if id != hb.ID && now.Sub(w.LastSeen) <= w.TTL && w.Fingerprint.Digest != "" && w.Fingerprint.Digest != hb.Fingerprint.Digest {
			r.log.Warn("workers serve different models: their vectors are not comparable; the sync takes the majority's as current",
				zap.String("worker", hb.ID), zap.String("digest", hb.Fingerprint.ShortDigest()),
				zap.String("other_worker", id), zap.String("other_digest", w.Fingerprint.ShortDigest()))
			return
		}
	}
}

// Live returns the workers heard from within their TTL, sorted by id.
func (r *Liveness) Live() []WorkerStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	var out []WorkerStatus
	for id, w := range r.workers {
		if now.Sub(w.LastSeen) > w.TTL {
			delete(r.workers, id)
			r.log.Warn("worker gone silent", zap.String("worker", id), zap.Time("last_seen", w.LastSeen))
			continue
		}
		out = append(out, w)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Ready says how many live workers can embed now and, when none can, why.
func (r *Liveness) Ready() (int, string) {
	live := r.Live()
	n := 0
	var reasons []string
	for _, w := range live {
		if w.Ready {
			n++
		} else {
			reasons = append(reasons, w.ID+": "+w.Reason)
		}
	}
	switch {
	case n > 0:
		return n, ""
	case len(live) == 0:
		return 0, "no live worker: start one (go run ./cmd/worker) or wait for it to announce itself"
	default:
		return 0, "no worker can embed now: " + strings.Join(reasons, "; ")
	}
}

// Close stops listening.
func (r *Liveness) Close() error { return r.sub.Unsubscribe() }

// Fingerprint is the model fingerprint the most ready live workers report:
// the vector space the system serves now (during a change of model two may
// be live at once; see warnMixed). ok is false while no ready worker has
// reported one.
func (r *Liveness) Fingerprint() (fp vector.Fingerprint, ok bool) {
	counts := map[vector.Fingerprint]int{}
	for _, w := range r.Live() {
		if w.Ready && w.Fingerprint.Digest != "" {
			counts[w.Fingerprint]++
		}
	}
	best := 0
	for f, n := range counts {
		if n > best || (n == best && f.Digest < fp.Digest) {
			fp, best = f, n
		}
	}
	return fp, best > 0
}
