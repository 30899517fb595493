package faults

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/proctest"
	"github.com/waywo/embed/internal/wire"
)

// Started before their dependencies, as a fleet restarted together under
// systemd or Kubernetes is, the api and a worker wait instead of exiting:
// the api serves /health meanwhile saying what it waits for, and once
// nats-server and then Ollama are up the system is healthy by itself, with
// no process restarted.
func TestStartInAnyOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the system as processes")
	}
	ollamatest.Exclusive(t)
	buildBinaries(t)
	dir := t.TempDir()
	// An Ollama with the model made, then stopped: it comes up last, at
	// the address the worker was given.
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "ollama"), 0o755))
	ol, err := ollamatest.StartServer(filepath.Join(dir, "ollama"), "PARAMETER num_thread 1")
	if err != nil {
		ollamatest.Unavailable(t, err)
	}
	t.Cleanup(ol.Stop)
	ol.Stop()

	natsPort := proctest.Port(t)
	roles := proctest.NewRoles()
	conf := loneNATS(t, dir, natsPort)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	httpAddr := proctest.Addr(t)
	common := map[string]string{
		"NATS_URL": natsURL, "EMBED_MODEL": ol.Model, "EMBED_DIMENSIONS": strconv.Itoa(ol.Dims),
		"EMBED_HEARTBEAT_INTERVAL": "200ms",
	}
	apiEnv := map[string]string{"EMBED_HTTP_ADDR": httpAddr, "EMBED_DATA_DIR": filepath.Join(dir, "api-data"),
		"WAYWO_DB": filepath.Join(dir, "waywo.db"), "EMBED_WORKER": "off"}
	workerEnv := map[string]string{"OLLAMA_HOST": ol.URL, "EMBED_WORKER_ID": "w1", "EMBED_METRICS_ADDR": proctest.Addr(t)}
	proctest.With(apiEnv, common, roles.As(wire.RoleAPI))
	proctest.With(workerEnv, common, roles.As(wire.RoleWorker))
	api := startProc(t, dir, "api", "api", apiEnv)
	worker := startProc(t, dir, "worker", "worker", workerEnv)

	health := func() (int, string) {
		hc := http.Client{Timeout: 2 * time.Second}
		resp, err := hc.Get("http://" + httpAddr + "/health")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		var h struct{ Reason string }
		_ = json.NewDecoder(resp.Body).Decode(&h)
		return resp.StatusCode, h.Reason
	}
	waitFor := func(what string, cond func(int, string) bool) {
		t.Helper()
		var status int
		var reason string
		require.Eventually(t, func() bool {
			status, reason = health()
			return cond(status, reason)
		}, 90*time.Second, 50*time.Millisecond, "%s: /health %d %q\n--- api:\n%s\n--- worker:\n%s", what, status, reason, api.Tail(2000), worker.Tail(2000))
		require.True(t, api.Alive(), "the api waits, it does not exit:\n%s", api.Tail(2000))
		require.True(t, worker.Alive(), "the worker waits, it does not exit:\n%s", worker.Tail(2000))
	}

	waitFor("no NATS yet", func(s int, r string) bool {
		return s == http.StatusServiceUnavailable && strings.Contains(r, "waiting for NATS at "+natsURL)
	})
	startProc(t, dir, "nats-server", "nats-server", roles.Server(), "-c", conf)
	waitFor("NATS up, no Ollama yet", func(s int, r string) bool {
		return s == http.StatusServiceUnavailable && strings.Contains(r, "waiting for the model server at "+ol.URL)
	})
	require.NoError(t, ol.Restart())
	waitFor("everything up", func(s int, _ string) bool { return s == http.StatusOK })

	resp, err := http.Post("http://"+httpAddr+"/embed", "application/json", strings.NewReader(`{"documents":["started in any order"]}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	for _, p := range []*proctest.Process{api, worker} {
		require.Contains(t, p.Tail(20000), "waiting for", "%s said what it waited for", p.Name)
	}
}
