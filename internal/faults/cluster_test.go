// Package faults is the multi-process fault suite: real binaries on
// loopback — nats-server as its own process, the api, two workers — a real
// Ollama with the tiny model, and a real SQLite file, with faults injected
// from outside (kill -9, stopped Ollama, restarted nats-server, a write lock
// on the file, SIGTERM, a slow Ollama). Tests assert on final states and
// synchronise with bounded polling loops, never sleeps.
package faults

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/ollama"
	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/proctest"
	"github.com/waywo/embed/internal/wire"
)

// binaries are built once per run: api, worker and nats-server.
var binaries struct {
	once sync.Once
	dir  string
	err  error
}

func buildBinaries(t *testing.T) string {
	t.Helper()
	binaries.once.Do(func() {
		binaries.dir, binaries.err = os.MkdirTemp("", "waywo-faults-bin-")
		if binaries.err != nil {
			return
		}
		binaries.err = proctest.BuildBinaries(binaries.dir, "api", "worker", "nats-server")
	})
	require.NoError(t, binaries.err)
	return binaries.dir
}

// startProc starts bin (one of the built binaries, or an absolute path)
// with a pipe for standard input; it is killed when the test ends.
func startProc(t *testing.T, dir, bin, name string, env map[string]string, args ...string) *proctest.Process {
	t.Helper()
	if !filepath.IsAbs(bin) {
		bin = filepath.Join(binaries.dir, bin)
	}
	p, err := proctest.Start(proctest.Spec{Name: name, Dir: dir, Bin: bin, Args: args, Env: env, Stdin: true})
	require.NoError(t, err)
	t.Cleanup(p.Kill)
	return p
}

// loneNATS writes the config of a lone nats-server in dir, on port,
// its store under dir/jetstream and its users deploy/nats-roles.conf's
// (start it with roles.Server() in its environment), and returns its path.
func loneNATS(t *testing.T, dir string, port int) string {
	t.Helper()
	roles, err := proctest.RolesConf()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "nats-roles.conf"), roles, 0o644))
	conf := filepath.Join(dir, "nats.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf("listen: 127.0.0.1:%d\njetstream { store_dir: %q }\ninclude \"nats-roles.conf\"\n",
		port, filepath.Join(dir, "jetstream"))), 0o644))
	return conf
}

// exitCode waits for p to exit and returns its exit code.
func exitCode(t *testing.T, p *proctest.Process, limit time.Duration) int {
	t.Helper()
	code, err := p.Wait(limit)
	require.NoError(t, err, p.Tail(3000))
	return code
}

// cluster is one system under test: its own nats-server, api, workers and
// WAYWO file, over the package's shared Ollama.
type cluster struct {
	t        *testing.T
	dir      string
	ollama   *ollamatest.Server
	opts     clusterOptions
	natsPort int
	natsConf string
	nats     *proctest.Process // the first of nodes
	nodes    []natsNode
	apiEnv   map[string]string
	api      *proctest.Process
	apiURL   string
	workers  []*proctest.Process
	wenv     []map[string]string // each worker's settings, to start it again
	dbPath   string
	raw      *sql.DB // the backend's connection to the file
	roles    proctest.Roles
	nc       *nats.Conn          // the backend's: a publisher, without credentials
	js       jetstream.JetStream // over nc
	admin    jetstream.JetStream // as the api role: to look at the streams
	direct   *ollama.Endpoint
	projects int
}

type clusterOptions struct {
	ollamaURL      string         // the workers' OLLAMA_HOST; default the real Ollama
	ollamaURLs     []string       // each worker's own OLLAMA_HOST instead
	requestTimeout time.Duration  // EMBED_REQUEST_TIMEOUT; default 10s
	projects       int            // rows in waywo_projects; default 20
	natsNodes      int            // nats-servers: 1 (default), or 3 in a JetStream cluster
	nodeStores     map[int]string // node i's store directory, when not under the test's
	// embeddedStore, when set, runs the api's embedded nats-server (no
	// nats-server process) with EMBED_DATA_DIR there.
	embeddedStore string
	apiEnv        map[string]string // on top of the api's defaults
}

// natsNode is one nats-server of the cluster.
type natsNode struct {
	name, conf string
	port       int
	profPort   int // its Go profiles (goroutines)
	proc       *proctest.Process
}

func newCluster(t *testing.T, o clusterOptions) *cluster {
	t.Helper()
	buildBinaries(t)
	ol := ollamatest.Shared(t)
	if o.ollamaURL == "" {
		o.ollamaURL = ol.URL
	}
	if o.requestTimeout == 0 {
		o.requestTimeout = 10 * time.Second
	}
	if o.projects == 0 {
		o.projects = 20
	}
	c := &cluster{t: t, dir: t.TempDir(), ollama: ol, opts: o, projects: o.projects, roles: proctest.NewRoles()}

	// The WAYWO file, as the backend has it, with projects that have no
	// vector yet.
	c.dbPath = filepath.Join(c.dir, "waywo.db")
	store, err := db.Open(context.Background(), c.dbPath, zap.NewNop())
	require.NoError(t, err)
	require.NoError(t, store.Close())
	c.raw, err = sql.Open("sqlite3", "file:"+c.dbPath+"?_busy_timeout=30000")
	require.NoError(t, err)
	c.raw.SetMaxOpenConns(1)
	t.Cleanup(func() { c.raw.Close() })
	for id := 1; id <= c.projects; id++ {
		_, err := c.raw.Exec(db.InsertProject, id, fmt.Sprintf("Project %d", id), ollamatest.Sentence(uint64(id), 10), `["faults"]`)
		require.NoError(t, err)
	}

	// nats-server, its own process, file store synced and users as in
	// deploy/nats.conf; or three of them, routed into one JetStream cluster.
	if o.natsNodes == 0 && o.embeddedStore == "" {
		o.natsNodes = 1
	}
	routes := make([]int, o.natsNodes)
	for i := range o.natsNodes {
		n := natsNode{name: "faults", port: proctest.Port(t), profPort: proctest.Port(t), conf: filepath.Join(c.dir, "nats.conf")}
		store := filepath.Join(c.dir, "jetstream")
		if o.natsNodes > 1 {
			routes[i] = proctest.Port(t)
			n.name = fmt.Sprintf("n%d", i+1)
			n.conf = filepath.Join(c.dir, n.name+".conf")
			store = filepath.Join(c.dir, n.name, "jetstream")
		}
		if d, ok := o.nodeStores[i]; ok {
			store = filepath.Join(d, "jetstream")
		}
		conf := fmt.Sprintf("listen: 127.0.0.1:%d\nserver_name: %s\nprof_port: %d\njetstream { store_dir: %q, sync_interval: 10s }\n",
			n.port, n.name, n.profPort, store)
		c.nodes = append(c.nodes, n)
		c.nodes[i].conf = n.conf
		require.NoError(t, os.WriteFile(n.conf, []byte(conf+"include \"nats-roles.conf\"\n"), 0o644))
	}
	if len(c.nodes) > 0 {
		roles, err := proctest.RolesConf()
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(c.dir, "nats-roles.conf"), roles, 0o644))
	}
	if o.natsNodes > 1 {
		for i, n := range c.nodes {
			var rs []string
			for _, p := range routes {
				rs = append(rs, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
			}
			f, err := os.OpenFile(n.conf, os.O_APPEND|os.O_WRONLY, 0)
			require.NoError(t, err)
			_, err = fmt.Fprintf(f, "cluster { name: faults, listen: 127.0.0.1:%d, routes: [%s] }\n", routes[i], strings.Join(rs, ", "))
			require.NoError(t, err)
			require.NoError(t, f.Close())
		}
	}
	if len(c.nodes) > 0 {
		c.natsPort, c.natsConf = c.nodes[0].port, c.nodes[0].conf
	} else {
		c.natsPort = proctest.Port(t) // the api's embedded server
	}
	for i := range c.nodes {
		c.startNode(i)
	}
	if len(c.nodes) > 1 { // the cluster's JetStream answers once it has a meta leader
		nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", c.nodes[0].port), nats.UserInfo("api", c.roles.API), nats.CustomInboxPrefix(wire.APIInboxPrefix))
		require.NoError(t, err)
		js, err := jetstream.New(nc)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := js.AccountInfo(ctx)
			return err == nil
		}, 60*time.Second, 50*time.Millisecond, "the JetStream cluster forms")
		nc.Close()
	}

	u, err := ollamaURL(ol.URL)
	require.NoError(t, err)
	c.direct = ollama.NewEndpoint(u, ollama.Options{
		Model: ol.Model, Dims: ol.Dims, MaxBatch: 32, Timeout: 30 * time.Second, KeepAlive: -1, Truncate: true,
	})

	urls := []string{fmt.Sprintf("nats://127.0.0.1:%d", c.natsPort)}
	for _, n := range c.nodes[min(1, len(c.nodes)):] {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", n.port))
	}
	natsURL := strings.Join(urls, ",")
	common := map[string]string{
		"NATS_URL": natsURL, "EMBED_MODEL": ol.Model, "EMBED_DIMENSIONS": strconv.Itoa(ol.Dims),
		"EMBED_HEARTBEAT_INTERVAL": "200ms", "EMBED_LOG_LEVEL": "info",
	}
	httpPort := proctest.Port(t)
	c.apiURL = fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	c.apiEnv = map[string]string{
		"EMBED_HTTP_ADDR": fmt.Sprintf("127.0.0.1:%d", httpPort), "EMBED_DATA_DIR": filepath.Join(c.dir, "api-data"),
		"WAYWO_DB": c.dbPath, "EMBED_WORKER": "off", "EMBED_CACHE_SIZE": "0",
		"EMBED_REQUEST_TIMEOUT": o.requestTimeout.String(), "EMBED_RECONCILE_INTERVAL": "3s",
		"EMBED_SHUTDOWN_TIMEOUT": "20s",
	}
	for k, v := range common {
		c.apiEnv[k] = v
	}
	proctest.With(c.apiEnv, c.roles.As(wire.RoleAPI))
	if o.embeddedStore != "" { // its roles as the server's
		delete(c.apiEnv, "NATS_URL")
		delete(c.apiEnv, "NATS_USER")
		delete(c.apiEnv, "NATS_PASSWORD")
		proctest.With(c.apiEnv, c.roles.Embedded())
		c.apiEnv["EMBED_NATS_ADDR"] = fmt.Sprintf("127.0.0.1:%d", c.natsPort)
		c.apiEnv["EMBED_DATA_DIR"] = o.embeddedStore
		c.apiEnv["EMBED_WORKER"] = "off"
	}
	for k, v := range o.apiEnv {
		c.apiEnv[k] = v
	}
	c.startAPI()
	if o.embeddedStore != "" { // the workers connect to the api's server
		require.Eventually(t, func() bool {
			conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", c.natsPort), 200*time.Millisecond)
			if err == nil {
				conn.Close()
			}
			return err == nil
		}, 60*time.Second, 20*time.Millisecond, "the api's nats-server listens\n%s", c.api.Tail(3000))
	}
	for i := 1; i <= 2; i++ {
		url := o.ollamaURL
		if len(o.ollamaURLs) > 0 {
			url = o.ollamaURLs[i-1]
		}
		env := map[string]string{
			"OLLAMA_HOST": url, "EMBED_WORKER_ID": fmt.Sprintf("w%d", i), "EMBED_BATCH_SIZE": "8",
			"EMBED_METRICS_ADDR": fmt.Sprintf("127.0.0.1:%d", proctest.Port(t)), "EMBED_SHUTDOWN_TIMEOUT": "20s",
			"EMBED_MODEL_TIMEOUT": "30s",
		}
		c.wenv = append(c.wenv, proctest.With(env, common, c.roles.As(wire.RoleWorker)))
		c.workers = append(c.workers, nil)
		c.startWorker(i - 1)
	}

	// The backend's NATS connection: reconnects for ever.
	c.nc, err = nats.Connect(natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(c.nc.Close)
	c.js, err = jetstream.New(c.nc)
	require.NoError(t, err)
	admin, err := nats.Connect(natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.UserInfo("api", c.roles.API), nats.CustomInboxPrefix(wire.APIInboxPrefix))
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	c.admin, err = jetstream.New(admin)
	require.NoError(t, err)
	c.waitHealthy(60 * time.Second)
	t.Cleanup(func() {
		if t.Failed() {
			procs := []*proctest.Process{c.api}
			for _, n := range c.nodes {
				procs = append(procs, n.proc)
			}
			for _, p := range append(procs, c.workers...) {
				t.Logf("--- %s log (end):\n%s", p.Name, p.Tail(3000))
			}
		}
	})
	return c
}

// startNATS starts the lone nats-server (again).
func (c *cluster) startNATS() { c.startNode(0) }

// startNode starts nats-server i (again) on its store.
func (c *cluster) startNode(i int) {
	n := &c.nodes[i]
	n.proc = startProc(c.t, c.dir, "nats-server", "nats-server-"+n.name, c.roles.Server(), "-c", n.conf)
	if i == 0 {
		c.nats = n.proc
	}
	// A server that exits (its port taken since it was chosen, say) or
	// never listens fails the test with its log, which says why.
	addr := fmt.Sprintf("127.0.0.1:%d", n.port)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	limit := time.After(30 * time.Second)
	for {
		if conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			conn.Close()
			return
		}
		select {
		case <-tick.C:
		case <-n.proc.Done():
			c.t.Fatalf("nats-server %s exited before listening on %s; its log ends:\n%s", n.name, addr, n.proc.Tail(4000))
		case <-limit:
			c.t.Fatalf("nats-server %s did not listen on %s within 30 s; its log ends:\n%s", n.name, addr, n.proc.Tail(4000))
		}
	}
}

func (c *cluster) startAPI() {
	c.api = startProc(c.t, c.dir, "api", "api", c.apiEnv)
}

// startWorker starts worker i (again).
func (c *cluster) startWorker(i int) {
	c.workers[i] = startProc(c.t, c.dir, "worker", fmt.Sprintf("worker%d", i+1), c.wenv[i])
}

// health returns /health's status and reason (0 when unreachable).
func (c *cluster) health() (int, string) {
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(c.apiURL + "/health")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var h struct {
		Reason string `json:"reason"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&h)
	return resp.StatusCode, h.Reason
}

// degraded is /health's degraded, or "".
func (c *cluster) degraded() string {
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(c.apiURL + "/health")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var h struct {
		Degraded string `json:"degraded"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&h)
	return h.Degraded
}

func (c *cluster) waitHealthy(limit time.Duration) {
	c.t.Helper()
	var reason string
	ok := assert.Eventually(c.t, func() bool {
		var s int
		s, reason = c.health()
		return s == http.StatusOK
	}, limit, 20*time.Millisecond)
	if !ok {
		var nodes strings.Builder
		for _, n := range c.nodes {
			fmt.Fprintf(&nodes, "--- %s log (end):\n%s\n", n.name, n.proc.Tail(3000))
		}
		c.t.Fatalf("the api never became healthy: %s\n--- api log (end):\n%s\n%s", reason, c.api.Tail(3000), nodes.String())
	}
}

func ollamaURL(s string) (*url.URL, error) { return url.Parse(s) }
