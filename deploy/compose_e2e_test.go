package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/proctest"
)

// standIn is the tag deploy/e2e/provision.sh gives its local images.
const standIn = "3"

// The compose deployment, started for real as a user starts it, with local
// stand-ins for the public images (no registry here) and the tiny model,
// checked only through the published ports and docker compose commands.
// Under CI=true it provisions what it needs (deploy/e2e/provision.sh) and
// fails rather than skips; elsewhere it skips when no Docker engine answers.
func TestComposeEndToEnd(t *testing.T) {
	ci := os.Getenv("CI") == "true"
	if testing.Short() && !ci {
		t.Skip("-short: the compose end-to-end test takes minutes")
	}
	if !ci && exec.Command("docker", "info").Run() != nil {
		t.Skip("no Docker engine answers (docker info); under CI=true this test provisions one")
	}
	ollamatest.Exclusive(t) // not beside the fault suite: both load the two cores
	start := time.Now()
	var report []string
	stage := func(name string, since time.Time) {
		line := fmt.Sprintf("%-34s %6.1f s", name, time.Since(since).Seconds())
		report = append(report, line)
		t.Log(line)
	}
	defer func() {
		// COMPOSE_E2E_REPORT: where .ci/run collects the stage times.
		if path := os.Getenv("COMPOSE_E2E_REPORT"); path != "" {
			_ = os.WriteFile(path, []byte(strings.Join(report, "\n")+"\n"), 0o644)
		}
	}()
	provision := exec.Command("bash", "e2e/provision.sh")
	out, err := provision.CombinedOutput()
	require.NoError(t, err, "deploy/e2e/provision.sh:\n%s", out)
	stage("provisioning (in the test)", start)

	c := newCompose(t)
	upStart := time.Now()
	c.up("--build")
	stage("image builds and up, all healthy", upStart)
	checks := time.Now()
	defer func() { stage("checks", checks); stage("whole test", start) }()

	t.Run("healthy", c.checkHealthy)
	t.Run("embed", c.checkEmbed)
	t.Run("python client", c.checkPythonClient)
	t.Run("project event", c.checkProjectEvent)
	t.Run("non-root", c.checkNonRoot)
	t.Run("scale and kill a worker", c.checkScaleAndKill)
	t.Run("restart nats", c.checkRestartNATS)
	t.Run("down and up", c.checkDownUp)
	t.Run("waywo data directory", c.checkWaywoDataDir)
	t.Run("down -v", c.checkDownVolumes)
}

type compose struct {
	t       *testing.T
	dir     string
	project string
	files   []string
	env     []string
	api     string // http://127.0.0.1:port
	nats    string // nats://127.0.0.1:port
	ollama  string // http://127.0.0.1:port
	model   string
	dims    int
}

func newCompose(t *testing.T) *compose {
	dir := t.TempDir()
	tb := ollamatest.DefaultTinyBERT()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "models"), 0o755))
	f, err := os.Create(filepath.Join(dir, "models", "tiny.gguf"))
	require.NoError(t, err)
	require.NoError(t, tb.WriteGGUF(f))
	require.NoError(t, f.Close())
	// The model service runs as 65532: it must read the mounted file.
	require.NoError(t, os.Chmod(filepath.Join(dir, "models"), 0o755))
	require.NoError(t, os.Chmod(dir, 0o755))

	apiPort, natsPort, ollamaPort := proctest.Port(t), proctest.Port(t), proctest.Port(t)
	override := fmt.Sprintf(`# Written by TestComposeEndToEnd: local stand-ins for the public images,
# free loopback ports, Ollama published so the test can ask it directly.
x-standins: &standins
  GO_IMAGE: waywo-e2e/golang:%[1]s
  API_BASE_IMAGE: waywo-e2e/bookworm:%[1]s
  WORKER_BASE_IMAGE: waywo-e2e/bookworm:%[1]s
services:
  api:
    build: {args: *standins}
    ports: !override ["127.0.0.1:%[2]d:8000"]
  model:
    build: {args: *standins}
  worker:
    build: {args: *standins}
  nats:
    ports: !override ["127.0.0.1:%[3]d:4222"]
  ollama:
    ports: ["127.0.0.1:%[4]d:11434"]
`, standIn, apiPort, natsPort, ollamaPort)
	overridePath := filepath.Join(dir, "compose.e2e.yml")
	require.NoError(t, os.WriteFile(overridePath, []byte(override), 0o644))

	root, err := filepath.Abs("..")
	require.NoError(t, err)
	c := &compose{
		t: t, dir: dir, project: "waywo-e2e",
		files: []string{filepath.Join(root, "docker-compose.yml"), filepath.Join(root, "deploy", "compose.cpu.yml"), overridePath},
		env: []string{
			"NATS_IMAGE=waywo-e2e/nats:" + standIn, "OLLAMA_IMAGE=waywo-e2e/ollama", "OLLAMA_VERSION=" + standIn,
			"EMBED_MODEL=tiny", "EMBED_DIMENSIONS=" + strconv.Itoa(tb.Dims), "EMBED_CONTEXT=512",
			"EMBED_GGUF_DIR=" + filepath.Join(dir, "models"), "EMBED_MODEL_SOURCE=/models/tiny.gguf",
			"EMBED_NATS_API_PASSWORD=" + nuid.Next(), "EMBED_NATS_WORKER_PASSWORD=" + nuid.Next(),
		},
		api:    fmt.Sprintf("http://127.0.0.1:%d", apiPort),
		nats:   fmt.Sprintf("nats://127.0.0.1:%d", natsPort),
		ollama: fmt.Sprintf("http://127.0.0.1:%d", ollamaPort),
		model:  "tiny", dims: tb.Dims,
	}
	c.run(10*time.Minute, "down", "-v", "--remove-orphans") // what an earlier run left
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := c.run(time.Minute, "logs", "--no-color", "--tail", "60")
			t.Logf("docker compose logs:\n%s", logs)
		}
		c.run(5*time.Minute, "down", "-v", "--remove-orphans")
	})
	return c
}

// run is `docker compose -p … -f … args`, with the test's environment.
func (c *compose) run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := []string{"compose", "-p", c.project}
	for _, f := range c.files {
		full = append(full, "-f", f)
	}
	cmd := exec.CommandContext(ctx, "docker", append(full, args...)...)
	cmd.Env = append(os.Environ(), c.env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *compose) must(timeout time.Duration, args ...string) string {
	c.t.Helper()
	out, err := c.run(timeout, args...)
	require.NoError(c.t, err, "docker compose %s:\n%s", strings.Join(args, " "), out)
	return out
}

func (c *compose) up(extra ...string) {
	c.t.Helper()
	c.must(15*time.Minute, append([]string{"up", "-d"}, extra...)...)
	c.waitServices()
}

type container struct {
	Name     string
	Service  string
	State    string
	Health   string
	ExitCode int
}

func (c *compose) ps() []container {
	c.t.Helper()
	out := c.must(time.Minute, "ps", "-a", "--format", "json")
	var cs []container
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		var one container
		require.NoError(c.t, json.Unmarshal([]byte(line), &one), line)
		cs = append(cs, one)
	}
	return cs
}

// waitServices waits until every long-running service is running and
// healthy and the model service has exited 0.
func (c *compose) waitServices() {
	c.t.Helper()
	var last []container
	ok := waitFor(4*time.Minute, func() bool {
		last = c.ps()
		seen := map[string]bool{}
		for _, ct := range last {
			seen[ct.Service] = true
			if ct.Service == "model" {
				if ct.State != "exited" || ct.ExitCode != 0 {
					return false
				}
				continue
			}
			if ct.State != "running" || ct.Health != "healthy" {
				return false
			}
		}
		return seen["nats"] && seen["ollama"] && seen["model"] && seen["api"] && seen["worker"]
	})
	require.True(c.t, ok, "services not all healthy (and model exited 0): %+v", last)
}

// waitFor polls cond on a ticker until it holds or the deadline d passes
// (a docker compose command or an HTTP call each time: no signal to wait on).
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			return cond()
		case <-tick.C:
		}
	}
	return true
}

func (c *compose) getJSON(t *testing.T, path string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(c.api + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	return resp.StatusCode, body
}

func postJSON(url string, in any, out any) (int, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return 0, err
	}
	client := &http.Client{Timeout: 2 * time.Minute}
	resp, err := client.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, err
		}
	}
	return resp.StatusCode, nil
}

// reference is Ollama's own answer for the texts, from the published port.
func (c *compose) reference(t *testing.T, texts ...string) [][]float32 {
	t.Helper()
	var out struct {
		Embeddings [][]float32 `json:"embeddings"`
	}
	status, err := postJSON(c.ollama+"/api/embed", map[string]any{"model": c.model, "input": texts}, &out)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status)
	require.Len(t, out.Embeddings, len(texts))
	return out.Embeddings
}

// sqlite runs the sqlite3 shell on the api's waywo.db in the waywo-data
// volume, as user 65532 (the api's): the "backend" writing the shared file.
func (c *compose) sqlite(t *testing.T, sql string) string {
	t.Helper()
	out, err := exec.Command("docker", "run", "--rm", "--user", "65532:65532",
		"-v", c.project+"_waywo-data:/data", "waywo-e2e/bookworm:"+standIn,
		"sqlite3", "-cmd", ".timeout 10000", "/data/waywo.db", sql).CombinedOutput()
	require.NoError(t, err, "sqlite3 %q: %s", sql, out)
	return strings.TrimSpace(string(out))
}

func (c *compose) publishChanged(t *testing.T, id int) {
	t.Helper()
	nc, err := nats.Connect(c.nats, nats.Timeout(10*time.Second))
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = js.Publish(ctx, fmt.Sprintf("waywo.projects.changed.%d", id), nil)
	require.NoError(t, err)
}

const projectTitle, projectDescription = "Rust profiler", "a sampling profiler for rust web servers"

// loadGen sends /embed requests of one new text each from clients goroutines
// until stop is called, and counts what came back.
type loadGen struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	failures   []string
	stop       func()
}

func (c *compose) startLoad(clients int, allowed func(status int) bool) *loadGen {
	l := &loadGen{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for g := range clients {
		wg.Go(func() {
			client := &http.Client{Timeout: 2 * time.Minute}
			for i := 0; ctx.Err() == nil; i++ {
				body := fmt.Sprintf(`{"documents":["load %d %d rust garden server %d"]}`, g, i, time.Now().UnixNano())
				resp, err := client.Post(c.api+"/embed", "application/json", strings.NewReader(body))
				if err != nil {
					l.fail(fmt.Sprintf("client %d: %v", g, err))
					pause(ctx)
					continue
				}
				_ = resp.Body.Close()
				switch {
				case resp.StatusCode == http.StatusOK:
					l.ok.Add(1)
				case allowed != nil && allowed(resp.StatusCode):
					pause(ctx) // a refusal says come back later: no tight loop
				default:
					l.fail(fmt.Sprintf("client %d: HTTP %d", g, resp.StatusCode))
				}
			}
		})
	}
	l.stop = func() { cancel(); wg.Wait() }
	return l
}

// pause holds a load client back briefly after a failure or a refusal,
// and ends at once when the load is stopped.
func pause(ctx context.Context) {
	t := time.NewTimer(200 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (l *loadGen) fail(s string) {
	l.failed.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failures) < 10 {
		l.failures = append(l.failures, s)
	}
}

func (c *compose) workers(t *testing.T) int {
	_, body := c.getJSON(t, "/health")
	n, _ := body["workers"].(float64)
	return int(n)
}

func (c *compose) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get(c.api + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(resp.Body)
	require.NoError(t, err)
	for _, line := range strings.Split(buf.String(), "\n") {
		if strings.HasPrefix(line, name+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, name)), 64)
			require.NoError(t, err)
			return v
		}
	}
	return 0
}
