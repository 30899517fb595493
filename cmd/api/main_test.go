package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/proctest"
	"github.com/waywo/embed/internal/system"
	"github.com/waywo/embed/internal/wire"
)

func TestMain(m *testing.M) { ollamatest.RunTests(m) }

// startRun runs the api as main does and returns its base URL once it
// listens; cancel stands in for SIGTERM and done yields run's result.
func startRun(t *testing.T, cfg config.Config) (base string, cancel func(), done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrCh, errCh := make(chan string, 1), make(chan error, 1)
	go func() {
		errCh <- system.RunAPI(ctx, cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), func(a string) { addrCh <- a })
	}()
	select {
	case a := <-addrCh:
		return "http://" + a, cancel, errCh
	case err := <-errCh:
		cancel()
		t.Fatalf("run returned early: %v", err)
		return "", nil, nil
	}
}

// apiConn connects to a running api's embedded nats-server as the api
// role, with the password that api made up, as the api's commands do.
func apiConn(t *testing.T, cfg config.Config) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	pw, err := os.ReadFile(filepath.Join(cfg.DataDir, system.APIPasswordFile))
	require.NoError(t, err)
	nc, err := broker.Connect(broker.Dial{URL: "nats://" + cfg.NATSAddr, Name: "test-api", Role: wire.RoleAPI,
		Auth: broker.RoleAuth(wire.RoleAPI, strings.TrimSpace(string(pw))), Log: zap.NewNop()})
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}

// waitHealthy waits until the api's /health answers 200.
func waitHealthy(t *testing.T, base string, limit time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		resp, err := http.Get(base + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, limit, 10*time.Millisecond)
}

// The default mode — no NATS_URL — is the whole system in one process: an
// embedded nats-server others can reach, an in-process worker, the HTTP API.
// On stop, a request in flight still gets its answer.
func TestRunEmbeddedServesAndStopsGracefully(t *testing.T) {
	t.Parallel()
	ol := ollamatest.Shared(t)
	natsAddr := proctest.Addr(t)
	cfg, err := config.Load(func(k string) (string, bool) {
		v, ok := map[string]string{
			"EMBED_HTTP_ADDR":          "127.0.0.1:0",
			"EMBED_NATS_ADDR":          natsAddr,
			"EMBED_DATA_DIR":           t.TempDir(),
			"EMBED_SYNC":               "false",
			"OLLAMA_HOST":              ol.URL,
			"EMBED_MODEL":              ol.Model,
			"EMBED_DIMENSIONS":         strconv.Itoa(ol.Dims),
			"EMBED_HEARTBEAT_INTERVAL": "50ms",
		}[k]
		return v, ok
	})
	require.NoError(t, err)

	base, cancel, done := startRun(t, cfg)
	defer cancel()
	waitHealthy(t, base, 10*time.Second)

	post := func(docs []string) (int, [][]float32) {
		body, _ := json.Marshal(map[string]any{"documents": docs})
		resp, err := http.Post(base+"/embed", "application/json", bytes.NewReader(body))
		require.NoError(t, err)
		defer resp.Body.Close()
		var out struct{ Embeddings [][]float32 }
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		return resp.StatusCode, out.Embeddings
	}
	status, vecs := post([]string{"hello rust"})
	require.Equal(t, http.StatusOK, status)
	require.Len(t, vecs[0], ol.Dims)

	// The embedded nats-server listens where EMBED_NATS_ADDR says.
	_, js := apiConn(t, cfg)

	big := make([]string, 300)
	for i := range big {
		big[i] = ollamatest.Sentence(uint64(i), 10)
	}
	type result struct {
		status int
		n      int
	}
	got := make(chan result, 1)
	go func() {
		s, v := post(big)
		got <- result{s, len(v)}
	}()
	require.Eventually(t, func() bool {
		info, err := js.Consumer(context.Background(), wire.JobsStream, wire.WorkersConsumer)
		if err != nil {
			return false
		}
		ci, err := info.Info(context.Background())
		return err == nil && ci.NumAckPending > 0
	}, 10*time.Second, time.Millisecond, "the big request reached the worker")
	cancel() // as SIGTERM does

	r := <-got
	require.Equal(t, http.StatusOK, r.status, "a request in flight at shutdown is still answered")
	require.Equal(t, len(big), r.n)
	require.NoError(t, <-done)
	_, err = http.Get(base + "/health")
	require.Error(t, err, "nothing listens after stop")
}

// EMBED_WORKER=off: the api serves alone, says why it cannot embed, and
// stops cleanly.
func TestRunWithoutWorkerStaysUp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg, err := config.Load(func(k string) (string, bool) {
		v, ok := map[string]string{
			"EMBED_HTTP_ADDR": "127.0.0.1:0", "EMBED_NATS_ADDR": "127.0.0.1:0",
			"EMBED_DATA_DIR": dir, "EMBED_WORKER": "off", "WAYWO_DB": filepath.Join(dir, "waywo.db"),
		}[k]
		return v, ok
	})
	require.NoError(t, err)
	base, cancel, done := startRun(t, cfg)
	defer cancel()
	resp, err := http.Get(base + "/health")
	require.NoError(t, err)
	var h map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&h))
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Contains(t, h["reason"], "no live worker")
	select {
	case err := <-done:
		t.Fatalf("run returned while serving: %v", err)
	default:
	}
	cancel()
	require.NoError(t, <-done)
}

// Two apis on one EMBED_DATA_DIR would each write their own JetStream
// block files and lose acknowledged events: the second refuses to start,
// naming the first; once the first stops, the directory is free again.
func TestSecondAPIOnOneDataDirRefusesToStart(t *testing.T) {
	t.Parallel()
	ol := ollamatest.Shared(t)
	dir := t.TempDir()
	load := func() config.Config {
		cfg, err := config.Load(func(k string) (string, bool) {
			v, ok := map[string]string{
				"EMBED_HTTP_ADDR":  "127.0.0.1:0",
				"EMBED_NATS_ADDR":  proctest.Addr(t),
				"EMBED_DATA_DIR":   dir,
				"EMBED_SYNC":       "false",
				"EMBED_WORKER":     "off",
				"OLLAMA_HOST":      ol.URL,
				"EMBED_MODEL":      ol.Model,
				"EMBED_DIMENSIONS": strconv.Itoa(ol.Dims),
			}[k]
			return v, ok
		})
		require.NoError(t, err)
		return cfg
	}
	first := load()
	_, cancel, done := startRun(t, first)
	second := load()
	var err error
	require.Eventually(t, func() bool {
		err = system.RunAPI(context.Background(), second, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)), nil)
		return err != nil && errors.Is(err, broker.ErrDataDirInUse)
	}, 10*time.Second, 50*time.Millisecond, "the second api started on a held directory: %v", err)
	require.ErrorContains(t, err, fmt.Sprintf("pid %d", os.Getpid()))
	require.ErrorContains(t, err, first.NATSAddr)

	cancel()
	require.NoError(t, <-done)
	sys, err := system.Open(context.Background(), second, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)), false)
	require.NoError(t, err, "free once the first has stopped")
	require.NoError(t, sys.Stop())
}
