package tracing_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	_ "github.com/mattn/go-sqlite3"

	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/proctest"
	"github.com/waywo/embed/internal/system"
)

func TestMain(m *testing.M) { ollamatest.RunTests(m) }

// receiver is an OTLP/HTTP trace receiver on the official protobuf
// definitions: what the service exports, as a collector would get it.
type receiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil || r.URL.Path != "/v1/traces" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			rc.spans = append(rc.spans, ss.Spans...)
		}
	}
	rc.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// find is the first span received that matches.
func (rc *receiver) find(match func(*tracepb.Span) bool) *tracepb.Span {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, s := range rc.spans {
		if match(s) {
			return s
		}
	}
	return nil
}

func attr(s *tracepb.Span, key string) *commonpb.AnyValue {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value
		}
	}
	return nil
}

func linksTo(s *tracepb.Span, traceID []byte) bool {
	for _, l := range s.Links {
		if bytes.Equal(l.TraceId, traceID) {
			return true
		}
	}
	return false
}

// One /embed request sent with a traceparent yields one trace: the api's
// server span, the publish of its job, the wait for its reply; the
// worker's batch span links to the publish and holds the model call with
// the GenAI attributes. A project event yields the sync's spans: the
// sync linked to the request that announced it, its embedding and its
// write to waywo_projects.
func TestOneRequestOneTrace(t *testing.T) {
	rc := &receiver{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50") // ms: export at once
	t.Setenv("OTEL_SERVICE_NAME", "")

	ol := ollamatest.Shared(t)
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "waywo.db")
	store, err := db.Open(context.Background(), dbPath, zap.NewNop())
	require.NoError(t, err)
	require.NoError(t, store.Close())
	raw, err := sql.Open("sqlite3", "file:"+dbPath)
	require.NoError(t, err)
	_, err = raw.Exec(db.InsertProject, 1, "Traced project", "a project whose sync is traced", `["otel"]`)
	require.NoError(t, err)
	require.NoError(t, raw.Close())

	cfg, err := config.Load(func(k string) (string, bool) {
		v, ok := map[string]string{
			"EMBED_HTTP_ADDR": "127.0.0.1:0", "EMBED_NATS_ADDR": proctest.Addr(t), "EMBED_DATA_DIR": filepath.Join(dir, "data"),
			"WAYWO_DB": dbPath, "EMBED_RECONCILE_INTERVAL": "1h", "EMBED_CACHE_SIZE": "0",
			"OLLAMA_HOST": ol.URL, "EMBED_MODEL": ol.Model, "EMBED_DIMENSIONS": strconv.Itoa(ol.Dims), "EMBED_HEARTBEAT_INTERVAL": "50ms",
		}[k]
		return v, ok
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	addr, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- system.RunAPI(ctx, cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), func(a string) { addr <- a })
	}()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case err := <-done:
		t.Fatalf("api stopped: %v", err)
	}
	require.Eventually(t, func() bool {
		resp, err := http.Get(base + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond)

	traceID := "4bf92f3577b34da6a3ce929d0e0e4736"
	tid, _ := hex.DecodeString(traceID)
	req, _ := http.NewRequest(http.MethodPost, base+"/embed", bytes.NewReader([]byte(`{"documents":["a traced request"]}`)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	ev, _ := http.NewRequest(http.MethodPost, base+"/projects/1/changed", nil)
	ev.Header.Set("traceparent", "00-"+fmt.Sprintf("%032x", 42)+"-00f067aa0ba902b7-01")
	resp, err = http.DefaultClient.Do(ev)
	require.NoError(t, err)
	resp.Body.Close()
	require.Less(t, resp.StatusCode, 300)
	eventTrace, _ := hex.DecodeString(fmt.Sprintf("%032x", 42))

	inTrace := func(name string) func(*tracepb.Span) bool {
		return func(s *tracepb.Span) bool { return bytes.Equal(s.TraceId, tid) && s.Name == name }
	}
	var server, send, wait, batch, model, sync, write *tracepb.Span
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		server = rc.find(inTrace("POST /embed"))
		send = rc.find(func(s *tracepb.Span) bool {
			return bytes.Equal(s.TraceId, tid) && s.Kind == tracepb.Span_SPAN_KIND_PRODUCER
		})
		wait = rc.find(inTrace("await replies"))
		batch = rc.find(func(s *tracepb.Span) bool { return s.Name == "embed batch" && linksTo(s, tid) })
		sync = rc.find(func(s *tracepb.Span) bool { return s.Name == "sync projects" && linksTo(s, eventTrace) })
		for _, s := range []*tracepb.Span{server, send, wait, batch, sync} {
			assert.NotNil(c, s)
		}
		if batch != nil {
			model = rc.find(func(s *tracepb.Span) bool { return bytes.Equal(s.ParentSpanId, batch.SpanId) })
			assert.NotNil(c, model)
		}
		if sync != nil {
			write = rc.find(func(s *tracepb.Span) bool {
				return bytes.Equal(s.TraceId, sync.TraceId) && s.Name == "write waywo_projects"
			})
			assert.NotNil(c, write)
		}
	}, 30*time.Second, 50*time.Millisecond, "spans received: %d", len(rc.spans))

	require.Equal(t, tracepb.Span_SPAN_KIND_SERVER, server.Kind)
	require.Equal(t, []byte{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}, server.ParentSpanId, "the caller's traceparent is honoured")
	require.Equal(t, "/embed", attr(server, "http.route").GetStringValue())
	require.EqualValues(t, 200, attr(server, "http.response.status_code").GetIntValue())
	require.NotEmpty(t, attr(server, "embed.request_id").GetStringValue())
	require.Equal(t, "nats", attr(send, "messaging.system").GetStringValue())
	require.Equal(t, tid, wait.TraceId)

	require.Equal(t, "embeddings "+ol.Model, model.Name)
	require.Equal(t, tracepb.Span_SPAN_KIND_CLIENT, model.Kind)
	require.Equal(t, "embeddings", attr(model, "gen_ai.operation.name").GetStringValue())
	require.Equal(t, "ollama", attr(model, "gen_ai.provider.name").GetStringValue())
	require.Equal(t, ol.Model, attr(model, "gen_ai.request.model").GetStringValue())
	require.Positive(t, attr(model, "gen_ai.usage.input_tokens").GetIntValue())
	require.EqualValues(t, ol.Dims, attr(model, "gen_ai.embeddings.dimension.count").GetIntValue())
	var linked bool
	for _, l := range batch.Links {
		if bytes.Equal(l.TraceId, tid) {
			linked = bytes.Equal(l.SpanId, send.SpanId)
		}
	}
	require.True(t, linked, "the batch links to the publish of the request's job")

	require.Equal(t, tracepb.Span_SPAN_KIND_CONSUMER, sync.Kind)
	require.NotNil(t, rc.find(func(s *tracepb.Span) bool {
		return bytes.Equal(s.TraceId, sync.TraceId) && s.Name == "embed bulk"
	}), "the sync's embedding is in its trace")
	require.Equal(t, "sqlite", attr(write, "db.system.name").GetStringValue())
}
