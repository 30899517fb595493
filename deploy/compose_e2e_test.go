package deploy

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/embed"
	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/systemtest"
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

	apiPort, natsPort, ollamaPort := systemtest.Port(t), systemtest.Port(t), systemtest.Port(t)
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

func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(250 * time.Millisecond)
	}
	return cond()
}

func (c *compose) checkHealthy(t *testing.T) {
	for _, ct := range c.ps() {
		if ct.Service == "model" {
			require.Equal(t, 0, ct.ExitCode)
			continue
		}
		require.Equal(t, "healthy", ct.Health, ct.Name)
	}
	logs := c.must(time.Minute, "logs", "--no-color", "model")
	require.Contains(t, logs, "model tiny installed in Ollama at http://ollama:11434")
	status, body := c.getJSON(t, "/health")
	require.Equal(t, http.StatusOK, status, body)
	require.Equal(t, true, body["model_loaded"])
	require.NotEmpty(t, body["model_digest"])
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

func (c *compose) checkEmbed(t *testing.T) {
	texts := []string{"a rust web server for hackers", "a garden planner for small balconies"}
	var got struct {
		Embeddings [][]float32 `json:"embeddings"`
	}
	status, err := postJSON(c.api+"/embed", map[string]any{"documents": texts}, &got)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status)
	want := c.reference(t, texts...)
	require.Len(t, got.Embeddings, 2)
	for i := range texts {
		require.Len(t, got.Embeddings[i], c.dims)
		require.InDeltaSlice(t, want[i], got.Embeddings[i], 1e-6, "document %d equals Ollama's own vector", i)
	}

	var oa struct {
		Data []struct {
			Index     int       `json:"index"`
			Embedding []float32 `json:"embedding"`
		} `json:"data"`
		Model string `json:"model"`
	}
	status, err = postJSON(c.api+"/v1/embeddings", map[string]any{"model": c.model, "input": texts}, &oa)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, c.model, oa.Model)
	require.Len(t, oa.Data, 2)
	require.InDeltaSlice(t, want[1], oa.Data[1].Embedding, 1e-6)
}

// The README's Python snippets, run with Debian's python3-httpx.
func (c *compose) checkPythonClient(t *testing.T) {
	script := `
import json, sys, httpx
base = sys.argv[1]
texts = ["a rust web server for hackers", "a garden planner"]
r = httpx.post(base + "/embed", json={"documents": texts}, timeout=120)
r.raise_for_status()
vectors = r.json()["embeddings"]
assert len(vectors) == len(texts)
r = httpx.post(base + "/embed", json={"documents": ["semantic search in sqlite"], "input_type": "query"}, timeout=120)
r.raise_for_status()
q = r.json()["embeddings"][0]
r = httpx.get(base + "/health")
ok = r.status_code == 200 and r.json()["model_loaded"]
print(json.dumps({"n": len(vectors), "dims": len(vectors[0]), "query_dims": len(q), "ok": ok}))
`
	out, err := exec.Command("/usr/bin/python3", "-c", script, c.api).CombinedOutput()
	require.NoError(t, err, "%s", out)
	var res struct {
		N         int  `json:"n"`
		Dims      int  `json:"dims"`
		QueryDims int  `json:"query_dims"`
		OK        bool `json:"ok"`
	}
	require.NoError(t, json.Unmarshal(bytes.TrimSpace(out), &res), "%s", out)
	require.Equal(t, 2, res.N)
	require.Equal(t, c.dims, res.Dims)
	require.Equal(t, c.dims, res.QueryDims)
	require.True(t, res.OK)
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

func decodeBlobHex(t *testing.T, h string, dims int) []float32 {
	t.Helper()
	b, err := hex.DecodeString(h)
	require.NoError(t, err)
	require.Len(t, b, 4*dims)
	v := make([]float32, dims)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

const projectTitle, projectDescription = "Rust profiler", "a sampling profiler for rust web servers"

func (c *compose) checkProjectEvent(t *testing.T) {
	c.sqlite(t, fmt.Sprintf(`INSERT INTO waywo_projects (id, source_comment_id, is_valid_project, title, short_description,
		description, hashtags, idea_score, complexity_score, is_bookmarked, created_at, processed_at)
		VALUES (42, 1, 1, '%s', '', '%s', '["rust","perf"]', 5, 5, 0, '2025-01-01 00:00:00', '2025-01-01 00:00:00')`,
		projectTitle, projectDescription))
	c.publishChanged(t, 42)
	var blob string
	require.True(t, waitFor(2*time.Minute, func() bool {
		blob = c.sqlite(t, "SELECT hex(description_embedding) FROM waywo_projects WHERE id = 42")
		return blob != ""
	}), "project 42 never got a vector")
	want := c.reference(t, embed.ProjectText(projectTitle, projectDescription, []string{"rust", "perf"}))[0]
	require.InDeltaSlice(t, want, decodeBlobHex(t, blob, c.dims), 1e-6, "the blob is the model's vector of the project's text")
}

// Our images run as a non-root user: the uid of each container's first
// process, read from /proc on this machine.
func (c *compose) checkNonRoot(t *testing.T) {
	for _, ct := range c.ps() {
		if ct.Service != "api" && ct.Service != "worker" {
			continue
		}
		out, err := exec.Command("docker", "inspect", "--format", "{{.State.Pid}}", ct.Name).Output()
		require.NoError(t, err)
		status, err := os.ReadFile(filepath.Join("/proc", strings.TrimSpace(string(out)), "status"))
		require.NoError(t, err)
		var uid string
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
				uid = f[1]
			}
		}
		require.Equal(t, "65532", uid, "%s runs as uid %s", ct.Name, uid)
	}
}

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
					time.Sleep(200 * time.Millisecond)
					continue
				}
				_ = resp.Body.Close()
				switch {
				case resp.StatusCode == http.StatusOK:
					l.ok.Add(1)
				case allowed != nil && allowed(resp.StatusCode):
					time.Sleep(200 * time.Millisecond)
				default:
					l.fail(fmt.Sprintf("client %d: HTTP %d", g, resp.StatusCode))
				}
			}
		})
	}
	l.stop = func() { cancel(); wg.Wait() }
	return l
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

func (c *compose) checkScaleAndKill(t *testing.T) {
	c.up("--scale", "worker=3")
	require.True(t, waitFor(time.Minute, func() bool { return c.workers(t) == 3 }), "/health never counted 3 workers")

	l := c.startLoad(4, nil)
	require.True(t, waitFor(time.Minute, func() bool { return l.ok.Load() >= 20 }), "no steady load")
	var victim string
	for _, ct := range c.ps() {
		if ct.Service == "worker" && strings.HasSuffix(ct.Name, "-2") {
			victim = ct.Name
		}
	}
	require.NotEmpty(t, victim)
	out, err := exec.Command("docker", "kill", victim).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.True(t, waitFor(time.Minute, func() bool { return c.workers(t) == 2 }), "/health still counts the killed worker")
	before := l.ok.Load()
	require.True(t, waitFor(time.Minute, func() bool { return l.ok.Load() >= before+20 }), "load stalled after the kill")
	l.stop()
	t.Logf("kill a worker under load: %d requests ok, %d failed", l.ok.Load(), l.failed.Load())
	require.Zero(t, l.failed.Load(), "failures: %v", l.failures)
	c.up("--scale", "worker=1")
}

// nats restarts under load: requests meanwhile end in a clean refusal
// (503/504 with a JSON reason) or succeed; afterwards the api and the
// worker serve again by themselves, without restarting.
func (c *compose) checkRestartNATS(t *testing.T) {
	started := map[string]string{}
	for _, ct := range c.ps() {
		if ct.Service == "api" || ct.Service == "worker" {
			out, err := exec.Command("docker", "inspect", "--format", "{{.State.StartedAt}}", ct.Name).Output()
			require.NoError(t, err)
			started[ct.Name] = strings.TrimSpace(string(out))
		}
	}
	l := c.startLoad(2, func(status int) bool {
		return status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout
	})
	require.True(t, waitFor(time.Minute, func() bool { return l.ok.Load() >= 10 }), "no steady load")
	c.must(2*time.Minute, "restart", "nats")
	require.True(t, waitFor(2*time.Minute, func() bool {
		status, _ := c.getJSON(t, "/health")
		return status == http.StatusOK
	}), "/health never came back after the nats restart")
	before := l.ok.Load()
	require.True(t, waitFor(time.Minute, func() bool { return l.ok.Load() >= before+10 }), "requests do not succeed again after the nats restart")
	l.stop()
	t.Logf("restart nats under load: %d requests ok, %d failed", l.ok.Load(), l.failed.Load())
	require.Zero(t, l.failed.Load(), "failures other than clean 503/504: %v", l.failures)
	for name, at := range started {
		out, err := exec.Command("docker", "inspect", "--format", "{{.State.StartedAt}}", name).Output()
		require.NoError(t, err)
		require.Equal(t, at, strings.TrimSpace(string(out)), "%s restarted: it should have reconnected by itself", name)
	}
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

// down and up again: the volumes keep the model, the queue and waywo.db;
// the model service finds the model installed and does nothing; an event
// for an unchanged project costs no model call.
func (c *compose) checkDownUp(t *testing.T) {
	blob := c.sqlite(t, "SELECT hex(description_embedding) FROM waywo_projects WHERE id = 42")
	require.NotEmpty(t, blob)
	c.must(5*time.Minute, "down")
	require.Empty(t, c.ps())
	c.up()
	logs := c.must(time.Minute, "logs", "--no-color", "model")
	require.Contains(t, logs, "nothing to do", "the second install does no work")
	require.NotContains(t, logs, "uploaded the model file")
	require.Equal(t, blob, c.sqlite(t, "SELECT hex(description_embedding) FROM waywo_projects WHERE id = 42"), "the volume kept waywo.db")

	c.publishChanged(t, 42)
	const unchanged = `embed_sync_projects_total{outcome="unchanged"}`
	require.True(t, waitFor(time.Minute, func() bool { return c.metric(t, unchanged) >= 1 }), "the event was not synced")
	require.Zero(t, c.metric(t, `embed_sync_projects_total{outcome="embedded"}`), "an unchanged project cost a model call")
}

// compose.waywo-data.yml: the backend's own directory, owned by a non-root
// uid, bind-mounted; the api runs as that uid and syncs the file there.
func (c *compose) checkWaywoDataDir(t *testing.T) {
	data := filepath.Join(c.dir, "waywo-data")
	require.NoError(t, os.MkdirAll(data, 0o755))
	require.NoError(t, os.Chown(data, 1000, 1000))
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	saved := *c
	c.files = append(append([]string(nil), c.files...), filepath.Join(root, "deploy", "compose.waywo-data.yml"))
	c.env = append(append([]string(nil), c.env...), "WAYWO_DATA_DIR="+data, "WAYWO_UID=1000", "WAYWO_GID=1000")
	defer func() { c.files, c.env = saved.files, saved.env }()
	c.up()
	db := filepath.Join(data, "waywo.db")
	st, err := os.Stat(db)
	require.NoError(t, err, "the api created waywo.db in the bind-mounted directory")
	require.Equal(t, uint32(1000), fileOwner(st), "owned by the directory's uid")

	// The backend writes the file from the host, as its owner would.
	out, err := exec.Command("docker", "run", "--rm", "--user", "1000:1000", "-v", data+":/waywo", "waywo-e2e/bookworm:"+standIn,
		"sqlite3", "-cmd", ".timeout 10000", "/waywo/waywo.db",
		`INSERT INTO waywo_projects (id, source_comment_id, is_valid_project, title, short_description, description, hashtags,
		idea_score, complexity_score, is_bookmarked, created_at, processed_at)
		VALUES (7, 1, 1, 'Garden planner', '', 'plan a small balcony garden', '[]', 5, 5, 0, '2025-01-01 00:00:00', '2025-01-01 00:00:00')`).CombinedOutput()
	require.NoError(t, err, "%s", out)
	c.publishChanged(t, 7)
	var blob string
	require.True(t, waitFor(2*time.Minute, func() bool {
		out, err := exec.Command("docker", "run", "--rm", "--user", "1000:1000", "-v", data+":/waywo", "waywo-e2e/bookworm:"+standIn,
			"sqlite3", "-cmd", ".timeout 10000", "/waywo/waywo.db", "SELECT hex(description_embedding) FROM waywo_projects WHERE id = 7").CombinedOutput()
		blob = strings.TrimSpace(string(out))
		return err == nil && blob != ""
	}), "project 7 never got a vector in the bind-mounted file")
	want := c.reference(t, embed.ProjectText("Garden planner", "plan a small balcony garden", nil))[0]
	require.InDeltaSlice(t, want, decodeBlobHex(t, blob, c.dims), 1e-6)
	c.must(5*time.Minute, "down")
}

// down -v removes the containers, the network and every volume.
func (c *compose) checkDownVolumes(t *testing.T) {
	c.up()
	c.must(5*time.Minute, "down", "-v")
	require.Empty(t, c.ps())
	out, err := exec.Command("docker", "volume", "ls", "-q", "--filter", "label=com.docker.compose.project="+c.project).Output()
	require.NoError(t, err)
	require.Empty(t, strings.TrimSpace(string(out)), "volumes left: %s", out)
	out, err = exec.Command("docker", "network", "ls", "-q", "--filter", "label=com.docker.compose.project="+c.project).Output()
	require.NoError(t, err)
	require.Empty(t, strings.TrimSpace(string(out)))
}

func fileOwner(fi os.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid
	}
	return math.MaxUint32
}
