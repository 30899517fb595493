package worker_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/dispatch"
	"github.com/waywo/embed/internal/engine"
	"github.com/waywo/embed/internal/systemtest"
	"github.com/waywo/embed/internal/wire"
	"github.com/waywo/embed/internal/worker"
)

// serialServer is a model server that computes one call at a time, in
// the order they come, and notes whether a call arrived while another was
// computing (sent before that one computed) and the most calls it held.
type serialServer struct {
	cost time.Duration

	mu        sync.Mutex
	queue     chan struct{}
	computing bool
	held      int
	overlaps  int
	mostHeld  int
}

func (s *serialServer) embed(ctx context.Context, req *api.EmbedRequest) (*api.EmbedResponse, error) {
	s.mu.Lock()
	if s.computing {
		s.overlaps++
	}
	s.held++
	s.mostHeld = max(s.mostHeld, s.held)
	s.mu.Unlock()
	s.queue <- struct{}{}
	s.mu.Lock()
	s.computing = true
	s.mu.Unlock()
	t := time.NewTimer(s.cost)
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	s.mu.Lock()
	s.computing = false
	s.held--
	s.mu.Unlock()
	<-s.queue
	engine.Computed(ctx) // the answer begins
	return vectorsFor(req), nil
}

// With the handover, once the worker has seen what calls take, it sends a
// serial server its next call before the last one has computed, so that
// the server does not wait for the answer's trip and the next call's; it
// never has more than the one call waiting. Without it (lead -1: off) no call
// arrives before the last has computed.
func TestHandoverSendsTheNextCallBeforeTheLastComputes(t *testing.T) {
	t.Parallel()
	for _, lead := range []time.Duration{10 * time.Millisecond, -1} {
		name := map[bool]string{true: "on", false: "off"}[lead > 0]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := systemtest.Setup(t, small)
			s := &serialServer{cost: 30 * time.Millisecond, queue: make(chan struct{}, 1)}
			fake := &fakeOllama{ctxFn: s.embed}
			var handedOver atomic.Int64
			startWorker(b, wopts{fake: fake, batch: wire.BulkJobDocuments, handover: lead, onBatch: func(bi worker.BatchInfo) {
				if bi.HandedOver {
					handedOver.Add(1)
				}
			}})
			docs := make([]string, 12*wire.BulkJobDocuments) // 12 calls of one job each
			for i := range docs {
				docs[i] = fmt.Sprintf("document %d", i)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := b.Client.Embed(ctx, dispatch.Request{Lane: wire.LaneBulk, Documents: docs})
			require.NoError(t, err)
			s.mu.Lock()
			defer s.mu.Unlock()
			require.LessOrEqual(t, s.mostHeld, 2, "one call computing and at most one waiting")
			if lead < 0 {
				require.Zero(t, s.overlaps, "without the handover a call goes once the last has computed")
				require.Zero(t, handedOver.Load(), "no batch reported handed over")
				return
			}
			// The first calls teach the cost; most of the rest are handed over.
			require.GreaterOrEqual(t, s.overlaps, 5, "calls that arrived while the last computed")
			// A call sent before the worker saw the last one computed counts
			// as handed over, also should the server just have finished it.
			require.GreaterOrEqual(t, handedOver.Load(), int64(s.overlaps), "every call that arrived while another computed is reported handed over")
		})
	}
}
