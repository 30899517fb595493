// Heartbeats: probing the endpoints and announcing the worker to the api.

package worker

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/waywo/embed/internal/queue"
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

// probeAll checks every endpoint concurrently: cheaply when it is ready, and
// for the model too when it is recovering.
func (w *Worker) probeAll(ctx context.Context) {
	var wg sync.WaitGroup
	for _, r := range w.runners {
		_, ready := w.readiness(r)
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, w.opts.ProbeTimeout)
			defer cancel()
			if err := r.ep.Probe(pctx, !ready); err != nil {
				if ctx.Err() == nil {
					w.setReady(r, false, err.Error())
				}
				return
			}
			w.setReady(r, true, "")
		})
	}
	wg.Wait()
}

func (w *Worker) announce(stopping bool) {
	hb := queue.Heartbeat{
		ID:       w.opts.ID,
		Dims:     w.opts.Dims,
		TTL:      3*w.opts.HeartbeatInterval + w.opts.ProbeTimeout,
		Stopping: stopping,
	}
	w.mu.Lock()
	for _, r := range w.runners {
		hb.Model = r.ep.Model.Name()
		hb.Endpoints = append(hb.Endpoints, r.ep.Model.Host())
		if r.ready {
			if !hb.Ready {
				hb.Fingerprint = r.ep.Model.Fingerprint()
			}
			hb.Ready = true
		} else if hb.Reason == "" {
			hb.Reason = r.ep.Model.Host() + ": " + r.reason
		}
		hb.Busy += r.busy
	}
	w.mu.Unlock()
	if hb.Ready {
		hb.Reason = ""
	}
	b, _ := json.Marshal(hb)
	if err := w.nc.Publish(queue.HeartbeatSubject, b); err != nil {
		w.log.Debug("heartbeat not sent", zap.Error(err))
	}
}
