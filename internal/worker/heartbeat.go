// Heartbeats: probing the endpoints and announcing the worker to the api.

package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/waywo/embed/internal/engine"
	"github.com/waywo/embed/internal/wire"
)

func (w *Worker) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(w.opts.HeartbeatInterval)
	defer t.Stop()
	w.announce(false)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.probeAll(ctx)
			w.announce(false)
		}
	}
}

// probeAll checks every prepared endpoint concurrently: cheaply when it is
// ready, for the model too when it is recovering, and with a test
// embedding after a stall. A probe that fails while calls are in flight
// marks the server stalled: those calls give their batches back.
func (w *Worker) probeAll(ctx context.Context) {
	var wg sync.WaitGroup
	for _, r := range w.runners {
		w.mu.Lock()
		ready, prepared, stalled, busy := r.ready, r.prepared, r.stalled, r.busy
		resting := w.opts.Now().Before(r.restUntil)
		w.mu.Unlock()
		if !prepared || resting {
			continue // its prepare loop owns it, or it asked to be left alone
		}
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, w.opts.ProbeTimeout)
			defer cancel()
			before, err := r.model.Probe(pctx, !ready)
			if err == nil && stalled {
				_, err = r.model.EmbedAll(pctx, []string{"probe"})
			}
			if d, asked := engine.RetryAfter(err); asked && ctx.Err() == nil {
				w.rest(r, d, err) // busy, not stalled: its calls in flight go on
				return
			}
			if err != nil {
				switch {
				case ctx.Err() != nil:
				case busy > 0:
					w.stalled(r, fmt.Sprintf("its probe failed with calls in flight: %v", err))
				case stalled:
					// It stays stalled: the reason says so, not only why the
					// test embedding failed.
					w.setReady(r, false, "stalled: its test embedding failed: "+err.Error())
				default:
					w.setReady(r, false, err.Error())
				}
				return
			}
			// What happened while the probe ran wins over its answer: a
			// server that answered 429 meanwhile rests, and one found
			// stalled meanwhile is ready again only after a test embedding.
			w.mu.Lock()
			overtaken := w.opts.Now().Before(r.restUntil) || (r.stalled && !stalled)
			if stalled && !overtaken {
				r.stalled = false
			}
			w.mu.Unlock()
			if overtaken {
				return
			}
			if stalled {
				w.log.Info("model server answers again", zap.String("ollama", r.model.Host()))
			}
			if after := r.model.Fingerprint(); before.Digest != "" && after.Digest != before.Digest {
				w.log.Warn("model changed in its server: vectors from now on are of the new model", zap.String("model", r.model.Name()),
					zap.String("ollama", r.model.Host()), zap.String("from", before.ShortDigest()), zap.String("to", after.ShortDigest()))
			}
			w.setReady(r, true, "")
		})
	}
	wg.Wait()
}

func (w *Worker) announce(stopping bool) {
	hb := wire.Heartbeat{
		ID:       w.opts.ID,
		Dims:     w.opts.Dims,
		TTL:      3*w.opts.HeartbeatInterval + w.opts.ProbeTimeout,
		Stopping: stopping,
	}
	w.mu.Lock()
	for _, r := range w.runners {
		hb.Model = r.model.Name()
		hb.Endpoints = append(hb.Endpoints, r.model.Host())
		if r.ready {
			if !hb.Ready {
				hb.Fingerprint = r.model.Fingerprint()
			}
			hb.Ready = true
		} else if hb.Reason == "" {
			hb.Reason = r.model.Host() + ": " + r.reason
		}
		hb.Busy += r.busy
	}
	w.mu.Unlock()
	if hb.Ready {
		hb.Reason = ""
	}
	b, _ := json.Marshal(hb)
	if err := w.nc.Publish(wire.HeartbeatSubject, b); err != nil {
		w.log.Debug("heartbeat not sent", zap.Error(err))
	}
}
