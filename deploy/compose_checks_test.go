// The checks of TestComposeEndToEnd, each as a user would make it.

package deploy

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/prompt"
)

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

// The Python snippets of docs/api.md, run with Debian's python3-httpx.
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
	want := c.reference(t, prompt.ProjectText(projectTitle, projectDescription, []string{"rust", "perf"}))[0]
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
	want := c.reference(t, prompt.ProjectText("Garden planner", "plan a small balcony garden", nil))[0]
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
