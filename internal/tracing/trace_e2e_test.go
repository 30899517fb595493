package tracing_test

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	_ "github.com/mattn/go-sqlite3"

	"github.com/waywo/embed/internal/jaegertest"
	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/systemtest"
)

func TestMain(m *testing.M) { ollamatest.RunTests(m) }

// One /embed request sent with a traceparent yields one trace: the api's
// server span, the publish of its job, the wait for its reply; the
// worker's batch span links to the publish and holds the model call with
// the GenAI attributes. A project event yields the sync's spans: the
// sync linked to the request that announced it, its embedding and its
// write to waywo_projects.
func TestOneRequestOneTrace(t *testing.T) {
	jg := jaegertest.Start(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", jg.OTLP)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50") // ms: export at once
	t.Setenv("OTEL_SERVICE_NAME", "")

	ol := ollamatest.Shared(t)
	base := systemtest.RunAPI(t, ol, map[string]string{"EMBED_RECONCILE_INTERVAL": "1h", "EMBED_CACHE_SIZE": "0"},
		systemtest.Project{ID: 1, Title: "Traced project", Description: "a project whose sync is traced", Hashtags: `["otel"]`})
	require.Eventually(t, func() bool {
		resp, err := http.Get(base + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond)

	traceID := "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest(http.MethodPost, base+"/embed", bytes.NewReader([]byte(`{"documents":["a traced request"]}`)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	ev, _ := http.NewRequest(http.MethodPost, base+"/projects/1/changed", nil)
	// (Jaeger writes a trace id whose upper half is zero in 16 digits: this
	// one has no leading zeros.)
	eventTrace := "0af7651916cd43dd8448eb211c80319c"
	ev.Header.Set("traceparent", "00-"+eventTrace+"-00f067aa0ba902b7-01")
	resp, err = http.DefaultClient.Do(ev)
	require.NoError(t, err)
	resp.Body.Close()
	require.Less(t, resp.StatusCode, 300)

	// What Jaeger shows: the request's trace, the batch that served it (a
	// trace of its own, linked), and the sync's.
	var reqTrace, batchTrace, syncTrace jaegertest.Trace
	var batch, sync jaegertest.Span
	linksTo := func(s jaegertest.Span, trace string) bool {
		for _, r := range s.References {
			if r.RefType == "FOLLOWS_FROM" && r.TraceID == trace {
				return true
			}
		}
		return false
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		tr, ok, err := jg.Trace(traceID)
		assert.NoError(c, err)
		assert.True(c, ok, "the request's trace")
		reqTrace = tr
		for _, op := range []string{"POST /embed", "embed interactive", "await replies"} {
			_, found := tr.Find(op)
			assert.True(c, found, "%s in the request's trace", op)
		}
		batches, err := jg.Search("waywo-embed-api", "embed batch")
		assert.NoError(c, err)
		for _, b := range batches {
			if s, ok := b.Find("embed batch"); ok && linksTo(s, traceID) {
				batchTrace, batch = b, s
			}
		}
		assert.NotEmpty(c, batch.SpanID, "a batch linked to the request")
		syncs, err := jg.Search("waywo-embed-api", "sync projects")
		assert.NoError(c, err)
		for _, tr := range syncs {
			if s, ok := tr.Find("sync projects"); ok && linksTo(s, eventTrace) {
				syncTrace, sync = tr, s
			}
		}
		assert.NotEmpty(c, sync.SpanID, "the sync linked to the event's request")
	}, 30*time.Second, 100*time.Millisecond)

	server, _ := reqTrace.Find("POST /embed")
	require.Equal(t, "server", server.Tag("span.kind"))
	require.Equal(t, "/embed", server.Tag("http.route"))
	require.EqualValues(t, 200, server.Tag("http.response.status_code"))
	require.NotEmpty(t, server.Tag("embed.request_id"))
	var parent string
	for _, r := range server.References {
		if r.RefType == "CHILD_OF" {
			parent = r.SpanID
		}
	}
	require.Equal(t, "00f067aa0ba902b7", parent, "the caller's traceparent is honoured")
	var send jaegertest.Span
	for _, s := range reqTrace.Spans {
		if s.Tag("span.kind") == "producer" {
			send = s
		}
	}
	require.Equal(t, "nats", send.Tag("messaging.system"), "the publish of the job")
	var linked bool
	for _, r := range batch.References {
		linked = linked || (r.RefType == "FOLLOWS_FROM" && r.TraceID == traceID && r.SpanID == send.SpanID)
	}
	require.True(t, linked, "the batch links to the publish of the request's job")

	model, ok := batchTrace.Find("embeddings " + ol.Model)
	require.True(t, ok, "the model call is in the batch's trace")
	require.Equal(t, "client", model.Tag("span.kind"))
	require.Equal(t, "embeddings", model.Tag("gen_ai.operation.name"))
	require.Equal(t, "ollama", model.Tag("gen_ai.provider.name"))
	require.Equal(t, ol.Model, model.Tag("gen_ai.request.model"))
	require.Greater(t, model.Tag("gen_ai.usage.input_tokens"), float64(0))
	require.EqualValues(t, ol.Dims, model.Tag("gen_ai.embeddings.dimension.count"))

	require.Equal(t, "consumer", sync.Tag("span.kind"))
	_, ok = syncTrace.Find("embed bulk")
	require.True(t, ok, "the sync's embedding is in its trace")
	write, ok := syncTrace.Find("write waywo_projects")
	require.True(t, ok, "the sync's write is in its trace")
	require.Equal(t, "sqlite", write.Tag("db.system.name"))
}
