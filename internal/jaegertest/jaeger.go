// Package jaegertest is a real Jaeger v2 for tests: built once from the Go
// module proxy into the user cache (as internal/ollamatest builds Ollama),
// started on free loopback ports with in-memory storage and an OTLP/HTTP
// receiver, and read back through its query API.
package jaegertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/waywo/embed/internal/proctest"
)

// Version is the jaeger module's version built: Jaeger v2's all-in-one
// binary (cmd/jaeger) is published under the module's v1 tags.
const Version = "v1.75.0"

// BinEnv names an existing jaeger binary to use instead of building one.
const BinEnv = "WAYWO_JAEGER_BIN"

// Binary returns the path of a jaeger binary, building it into the user
// cache on first use; concurrent test processes wait on a file lock. The
// module's go.mod has replace directives, which `go install pkg@version`
// refuses, so it is built as a tool of a module of its own.
func Binary() (string, error) {
	if p := os.Getenv(BinEnv); p != "" {
		return p, nil
	}
	return proctest.Cached("jaeger-"+Version, "jaeger", func(dir, bin string) error {
		mod := filepath.Join(dir, "build")
		if err := os.MkdirAll(mod, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module jaegerbuild\n\ngo 1.26\n"), 0o644); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		for _, args := range [][]string{
			{"get", "-tool", "github.com/jaegertracing/jaeger/cmd/jaeger@" + Version},
			{"build", "-o", bin + ".tmp", "github.com/jaegertracing/jaeger/cmd/jaeger"},
		} {
			cmd := exec.CommandContext(ctx, "go", args...)
			cmd.Dir = mod
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off")
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("go %v: %w\n%s", args, err, tail(out, 4000))
			}
		}
		return os.Rename(bin+".tmp", bin)
	})
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Server is a running Jaeger.
type Server struct {
	OTLP  string // the OTLP/HTTP receiver's base URL, for OTEL_EXPORTER_OTLP_ENDPOINT
	Query string // the query service's base URL
	proc  *proctest.Process
}

// Start runs a Jaeger with in-memory storage until the test ends. Where
// it cannot be built it fails the test under CI=true and skips it
// elsewhere, as the test Ollama does.
func Start(t *testing.T) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Jaeger is required under CI=true: %v", err)
		}
		t.Skipf("Jaeger unavailable: %v", err)
	}
	dir := t.TempDir()
	otlp, query, queryGRPC, health := proctest.Addr(t), proctest.Addr(t), proctest.Addr(t), proctest.Addr(t)
	conf := fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: %q
    grpc:
      endpoint: %q
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  healthcheckv2:
    use_v2: true
    http:
      endpoint: %q
receivers:
  otlp:
    protocols:
      http:
        endpoint: %q
processors:
  batch:
    timeout: 50ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`, query, queryGRPC, health, otlp)
	path := filepath.Join(dir, "jaeger.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := proctest.Start(proctest.Spec{Name: "jaeger", Dir: dir, Bin: bin, Args: []string{"--config", path}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	s := &Server{OTLP: "http://" + otlp, Query: "http://" + query, proc: p}
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if resp, err := http.Get(s.Query + "/api/services"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("jaeger did not start:\n%s", p.Tail(4000))
		}
		select {
		case <-p.Done():
			t.Fatalf("jaeger exited:\n%s", p.Tail(4000))
		case <-tick.C:
		}
	}
}

// Span is a span as Jaeger's query API returns it.
type Span struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	Tags []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
}

// Tag is the value of the span's tag key (an attribute), or nil.
func (s Span) Tag(key string) any {
	for _, t := range s.Tags {
		if t.Key == key {
			return t.Value
		}
	}
	return nil
}

// Trace is the spans of one trace.
type Trace struct {
	TraceID string `json:"traceID"`
	Spans   []Span `json:"spans"`
}

// Find is the trace's first span named op, if any.
func (tr Trace) Find(op string) (Span, bool) {
	for _, s := range tr.Spans {
		if s.OperationName == op {
			return s, true
		}
	}
	return Span{}, false
}

// Trace reads one trace by its hex id; ok is false while Jaeger has none.
func (s *Server) Trace(id string) (tr Trace, ok bool, err error) {
	trs, err := s.get("/api/traces/" + id)
	if err != nil || len(trs) == 0 {
		return Trace{}, false, err
	}
	return trs[0], true, nil
}

// Search is the traces of service that hold a span named op.
func (s *Server) Search(service, op string) ([]Trace, error) {
	q := url.Values{"service": {service}, "operation": {op}, "limit": {"100"}, "lookback": {"1h"}}
	return s.get("/api/traces?" + q.Encode())
}

func (s *Server) get(path string) ([]Trace, error) {
	resp, err := http.Get(s.Query + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jaeger %s: %s", path, resp.Status)
	}
	var out struct {
		Data []Trace `json:"data"`
	}
	return out.Data, json.NewDecoder(resp.Body).Decode(&out)
}
