package metrics

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/dispatch"
	"github.com/waywo/embed/internal/engine"
	"github.com/waywo/embed/internal/wire"
	"github.com/waywo/embed/internal/worker"
)

func TestNilMetricsAreSafe(t *testing.T) {
	t.Parallel()
	var a *API
	a.Request("r", 200, time.Millisecond)
	a.Documents("document", 1)
	a.Cache(1, 1)
	a.Error("x")
	var w *Worker
	w.Batch(worker.BatchInfo{})
	w.JobError("x")
	w.ModelCall("e", time.Millisecond, nil)
}

func TestWorkerCounts(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	w := NewWorker(reg)
	w.Batch(worker.BatchInfo{Jobs: 2, Documents: 5, Rejected: 1, Tokens: 40, Reason: worker.FlushFull, Took: time.Millisecond})
	w.Batch(worker.BatchInfo{Jobs: 1, Documents: 3, Reason: worker.FlushDrain, Err: errors.New("down")})
	w.ModelCall("h", time.Millisecond, engine.ErrRejected)
	w.ModelCall("h", time.Millisecond, nil)
	w.JobError("retried")
	require.Equal(t, 40.0, testutil.ToFloat64(w.tokens))
	require.Equal(t, 4.0, testutil.ToFloat64(w.embedded), "rejected and failed documents are not counted as embedded")
	require.Equal(t, 1.0, testutil.ToFloat64(w.flushes.WithLabelValues("full")))
	require.Equal(t, 1.0, testutil.ToFloat64(w.errors.WithLabelValues("retried")))
	require.Equal(t, 2, testutil.CollectAndCount(w.modelCalls))
}

func TestQueueCollectorReportsDown(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	NewAPI(reg, func() (int, int) { return 2, 1 }, func(wire.Lane) (dispatch.Stats, error) { return dispatch.Stats{}, errors.New("no stream") })
	mfs, err := reg.Gather()
	require.NoError(t, err)
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if g := m.GetGauge(); g != nil {
				got[mf.GetName()] = g.GetValue()
			}
		}
	}
	require.Equal(t, 0.0, got["embed_queue_up"])
	require.Equal(t, 2.0, got["embed_workers_live"])
	require.Equal(t, 1.0, got["embed_workers_ready"])
	_, hasMessages := got["embed_queue_messages"]
	require.False(t, hasMessages, "no made-up queue figures when the queue cannot be read")
}

func TestWorkerCountsHandovers(t *testing.T) {
	t.Parallel()
	w := NewWorker(prometheus.NewRegistry())
	w.Batch(worker.BatchInfo{Endpoint: "h", Jobs: 1, Documents: 8, Reason: worker.FlushFull, HandedOver: true})
	w.Batch(worker.BatchInfo{Endpoint: "h", Jobs: 1, Documents: 8, Reason: worker.FlushFull})
	require.Equal(t, 1.0, testutil.ToFloat64(w.handovers.WithLabelValues("h")), "the batch sent while its server computed the one before")
}
