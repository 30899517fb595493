// Package deploy holds the container images, the nats-server config and the
// Ollama model setup of the docker compose deployment. These machines have no
// Docker engine, so this test checks the compose files statically with
// compose-go, the loader Docker Compose itself uses.
package deploy

import (
	"bufio"
	"context"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/tracing"
	"github.com/waywo/embed/internal/wire"
)

// passwords are the NATS roles' passwords compose requires (.env's, in use).
var passwords = map[string]string{"EMBED_NATS_API_PASSWORD": "api-pw", "EMBED_NATS_WORKER_PASSWORD": "worker-pw"}

// load reads docker-compose.yml plus overrides as `docker compose -f … up`
// would, from the repository root, with env and passwords as the shell's
// environment.
func load(t *testing.T, env map[string]string, overrides ...string) *types.Project {
	t.Helper()
	all := maps.Clone(passwords)
	maps.Copy(all, env)
	p, err := loadEnv(all, overrides...)
	require.NoError(t, err)
	return p
}

func loadEnv(env map[string]string, overrides ...string) (*types.Project, error) {
	files := []string{"docker-compose.yml"}
	for _, o := range overrides {
		files = append(files, filepath.Join("deploy", o))
	}
	var kv []string
	for k, v := range env {
		kv = append(kv, k+"="+v)
	}
	opts, err := cli.NewProjectOptions(files, cli.WithWorkingDirectory(".."), cli.WithEnv(kv), cli.WithName("waywo-embed"))
	if err != nil {
		return nil, err
	}
	wd, err := filepath.Abs("..")
	if err != nil {
		return nil, err
	}
	for i, f := range opts.ConfigPaths {
		opts.ConfigPaths[i] = filepath.Join(wd, f)
	}
	return opts.LoadProject(context.Background())
}

// Compose will not start without the roles' passwords, and gives each
// service its own.
func TestComposeNeedsTheRolesPasswords(t *testing.T) {
	for missing := range passwords {
		env := maps.Clone(passwords)
		delete(env, missing)
		_, err := loadEnv(env)
		require.ErrorContains(t, err, "set "+missing+" in .env", "without %s", missing)
	}
	p := load(t, nil)
	nats := env(service(t, p, "nats"))
	require.Equal(t, "api-pw", nats["NATS_API_PASSWORD"])
	require.Equal(t, "worker-pw", nats["NATS_WORKER_PASSWORD"])
	api, worker := configOf(t, service(t, p, "api")), configOf(t, service(t, p, "worker"))
	require.Equal(t, broker.RoleAuth(wire.RoleAPI, "api-pw"), api.NATSAuth)
	require.Equal(t, broker.RoleAuth(wire.RoleWorker, "worker-pw"), worker.NATSAuth)
	requireMount(t, service(t, p, "nats"), "/etc/nats/nats-roles.conf")
}

func requireMount(t *testing.T, s types.ServiceConfig, target string) {
	t.Helper()
	for _, v := range s.Volumes {
		if v.Target == target {
			return
		}
	}
	t.Fatalf("service %s mounts nothing at %s", s.Name, target)
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	require.NoError(t, err, "service %s", name)
	return s
}

// env is a service's environment as the container sees it (env_file is
// optional and absent here).
func env(s types.ServiceConfig) map[string]string {
	out := map[string]string{}
	for k, v := range s.Environment {
		if v != nil {
			out[k] = *v
		}
	}
	return out
}

// configOf loads our configuration from a service's environment: every
// value the compose file sets must be one the binary accepts.
func configOf(t *testing.T, s types.ServiceConfig) config.Config {
	t.Helper()
	e := env(s)
	var known []string
	for _, s := range config.Settings() {
		known = append(known, s.Env)
	}
	for k := range e {
		if strings.HasPrefix(k, "OTEL_") && tracing.Reads(k) {
			continue // OpenTelemetry's own variables, read by its SDK
		}
		require.Contains(t, known, k, "service %s sets %s, which the binaries do not read", s.Name, k)
	}
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := e[k]; return v, ok })
	require.NoError(t, err, "service %s", s.Name)
	return cfg
}

func TestComposeRunsTheSystem(t *testing.T) {
	p := load(t, nil)
	for _, name := range []string{"nats", "ollama", "model", "api", "worker"} {
		service(t, p, name)
	}
	nats, ollama, model, api, worker := service(t, p, "nats"), service(t, p, "ollama"), service(t, p, "model"), service(t, p, "api"), service(t, p, "worker")

	// Our binaries: built from deploy/Dockerfile, whose stages exist.
	dockerfile, err := os.ReadFile("Dockerfile")
	require.NoError(t, err)
	for _, s := range []types.ServiceConfig{api, worker} {
		require.NotNil(t, s.Build, s.Name)
		require.Equal(t, "deploy/Dockerfile", s.Build.Dockerfile)
		_, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile))
		require.NoError(t, err, "%s builds from a Dockerfile that does not exist", s.Name)
		require.Regexp(t, `(?m)^FROM \S+ AS `+s.Build.Target+`$`, string(dockerfile))
	}
	require.Regexp(t, `(?m)^USER 65532:65532$`, string(dockerfile), "images run as non-root")
	require.Equal(t, 2, strings.Count(string(dockerfile), "\nHEALTHCHECK "), "both images have a HEALTHCHECK")

	// Each gets the variables it needs, with values the binaries accept.
	apiCfg, workerCfg := configOf(t, api), configOf(t, worker)
	natsURL, err := url.Parse(apiCfg.NATSURL)
	require.NoError(t, err)
	require.Equal(t, "nats:4222", natsURL.Host, "the api reaches the nats service")
	require.Equal(t, apiCfg.NATSURL, workerCfg.NATSURL)
	require.False(t, apiCfg.InProcessWorker(), "the api runs no worker: workers are their own service")
	require.Equal(t, "ollama:11434", workerCfg.OllamaHost.Host, "the worker reaches the ollama service")
	require.Equal(t, apiCfg.Model, workerCfg.Model)
	require.Equal(t, apiCfg.Dimensions, workerCfg.Dimensions)
	require.Equal(t, apiCfg.Model, env(model)["EMBED_MODEL"], "the model service makes the model the workers use")
	require.Equal(t, "http://ollama:11434", env(model)["OLLAMA_HOST"])
	require.Equal(t, "llama-embed-nemotron-8b", apiCfg.Model)
	require.Equal(t, 4096, apiCfg.Dimensions)

	// Ports agree with the listen addresses, published on loopback only.
	_, port, err := net.SplitHostPort(apiCfg.HTTPAddr)
	require.NoError(t, err)
	require.Len(t, api.Ports, 1)
	require.Equal(t, port, strconv.Itoa(int(api.Ports[0].Target)))
	require.Equal(t, "127.0.0.1", api.Ports[0].HostIP)
	require.Equal(t, "8000", api.Ports[0].Published)
	require.Len(t, nats.Ports, 1)
	require.Equal(t, uint32(4222), nats.Ports[0].Target)
	require.Equal(t, "127.0.0.1", nats.Ports[0].HostIP)
	require.Empty(t, worker.Ports, "workers publish nothing, so --scale works")
	require.Empty(t, worker.ContainerName, "a fixed container name would break --scale")
	_, err = net.ResolveTCPAddr("tcp", workerCfg.MetricsAddr)
	require.NoError(t, err)

	// Volumes: the api's data directory holds WAYWO_DB; nats's store is the
	// one nats.conf names; Ollama keeps its models.
	requireVolumeAt(t, p, api, filepath.Dir(apiCfg.DBPath))
	requireVolumeAt(t, p, api, apiCfg.DataDir)
	natsConf, err := os.ReadFile("nats.conf")
	require.NoError(t, err)
	store := regexp.MustCompile(`store_dir:\s*(\S+)`).FindSubmatch(natsConf)
	require.NotNil(t, store)
	requireVolumeAt(t, p, nats, string(store[1]))
	require.Regexp(t, `(?m)^\s*sync_interval:\s*10s`, string(natsConf), "the sync policy chosen in broker.StoreSyncInterval")
	requireVolumeAt(t, p, ollama, "/root/.ollama")

	// Healthchecks, and the order they give: nats → api, ollama → model → worker.
	for _, s := range []types.ServiceConfig{nats, ollama, api, worker} {
		require.NotNil(t, s.HealthCheck, "%s has no healthcheck", s.Name)
		require.NotEmpty(t, s.HealthCheck.Test, s.Name)
		require.False(t, s.HealthCheck.Disable, s.Name)
	}
	requireDependsOn(t, api, "nats", types.ServiceConditionHealthy)
	requireDependsOn(t, model, "ollama", types.ServiceConditionHealthy)
	requireDependsOn(t, worker, "ollama", types.ServiceConditionHealthy)
	requireDependsOn(t, worker, "model", types.ServiceConditionCompletedSuccessfully)
	requireDependsOn(t, worker, "nats", types.ServiceConditionHealthy)

	// The GPU.
	require.NotNil(t, ollama.Deploy)
	require.NotEmpty(t, ollama.Deploy.Resources.Reservations.Devices)
	require.Contains(t, ollama.Deploy.Resources.Reservations.Devices[0].Capabilities, "gpu")

	// The model service is `api model install` from our image, configured
	// with values the binary accepts, its source inside its mounts.
	require.NotNil(t, model.Build)
	require.Equal(t, "api", model.Build.Target)
	require.Equal(t, api.Image, model.Image)
	require.Empty(t, model.Entrypoint, "the image's entrypoint, /usr/local/bin/api")
	require.Equal(t, types.ShellCommand{"model", "install"}, model.Command)
	modelCfg := configOf(t, model)
	require.Equal(t, apiCfg.Model, modelCfg.Model)
	require.Equal(t, apiCfg.Dimensions, modelCfg.Dimensions)
	require.Equal(t, 8192, modelCfg.Context)
	require.Equal(t, "/models/llama-embed-nemotron-8b.gguf", modelCfg.ModelSource)
	requireVolumeAt(t, p, model, filepath.Dir(modelCfg.ModelSource))
	requireVolumeAt(t, p, model, modelCfg.DataDir)
	require.Equal(t, "no", model.Restart)

	// Ollama is pinned to a release that loads llama-embed, the same in
	// every service and in .env.example.
	for _, s := range []types.ServiceConfig{ollama} {
		name, tag, _ := strings.Cut(s.Image, ":")
		require.Equal(t, "ollama/ollama", name)
		require.NotEqual(t, "latest", tag)
		require.False(t, versionBefore(t, tag, "0.30.0"), "Ollama %s cannot load llama-embed", tag)
		require.Equal(t, tag, envExample(t)["OLLAMA_VERSION"])
	}
	multi := load(t, nil, "compose.multi-gpu.yml")
	require.Equal(t, ollama.Image, service(t, multi, "ollama-1").Image)
}

func versionBefore(t *testing.T, v, min string) bool {
	t.Helper()
	parse := func(s string) []int {
		var out []int
		for _, p := range strings.Split(s, ".") {
			n, err := strconv.Atoi(p)
			require.NoError(t, err, "version %q", s)
			out = append(out, n)
		}
		return out
	}
	return slices.Compare(parse(v), parse(min)) < 0
}

func requireVolumeAt(t *testing.T, p *types.Project, s types.ServiceConfig, dir string) {
	t.Helper()
	for _, v := range s.Volumes {
		if v.Target == dir {
			if v.Type == types.VolumeTypeVolume {
				require.Contains(t, p.Volumes, v.Source, "named volume %s is declared", v.Source)
			}
			return
		}
	}
	t.Fatalf("service %s mounts nothing at %s", s.Name, dir)
}

func requireDependsOn(t *testing.T, s types.ServiceConfig, on, condition string) {
	t.Helper()
	d, ok := s.DependsOn[on]
	require.True(t, ok, "%s does not depend on %s", s.Name, on)
	require.Equal(t, condition, d.Condition, "%s waits for %s", s.Name, on)
}

// The overrides load, and do what they say.
func TestComposeOverrides(t *testing.T) {
	cpu := load(t, nil, "compose.cpu.yml")
	o := service(t, cpu, "ollama")
	require.True(t, o.Deploy == nil || len(o.Deploy.Resources.Reservations.Devices) == 0, "no GPU reservation on CPU")

	data := load(t, map[string]string{"WAYWO_DATA_DIR": "/srv/waywo/data", "WAYWO_UID": "1000", "WAYWO_GID": "1000"}, "compose.waywo-data.yml")
	api := service(t, data, "api")
	cfg := configOf(t, api)
	require.Equal(t, "/waywo/waywo.db", cfg.DBPath)
	require.Equal(t, "1000:1000", api.User)
	found := false
	for _, v := range api.Volumes {
		found = found || (v.Source == "/srv/waywo/data" && v.Target == "/waywo")
	}
	require.True(t, found, "the backend's directory is mounted where WAYWO_DB points")

	multi := load(t, nil, "compose.multi-gpu.yml")
	w := configOf(t, service(t, multi, "worker"))
	require.Len(t, w.OllamaHosts, 2)
	for _, h := range w.OllamaHosts {
		name, _, err := net.SplitHostPort(h.Host)
		require.NoError(t, err)
		s := service(t, multi, name)
		require.Equal(t, "gpu", s.Deploy.Resources.Reservations.Devices[0].Capabilities[0])
		require.Len(t, s.Deploy.Resources.Reservations.Devices[0].IDs, 1, "%s has its own GPU", name)
	}
}

// The llama-server override runs llama.cpp's engine on the prepared GGUF
// with what embedding needs (mean pooling, every input within one
// micro-batch, a slot's context for each of its parallel sequences), and
// the worker drives it as an openai engine with a call per slot; Ollama
// does not start.
func TestComposeLlamaServer(t *testing.T) {
	p := load(t, nil, "compose.llama-server.yml")
	ws := service(t, p, "worker")
	w := configOf(t, ws)
	require.Equal(t, "openai", w.Backend)
	require.Len(t, w.BackendURLs, 1)
	require.Equal(t, "/v1", w.BackendURLs[0].Path)
	name, port, err := net.SplitHostPort(w.BackendURLs[0].Host)
	require.NoError(t, err)
	ls := service(t, p, name)
	cmd := []string(ls.Command)
	flag := func(f string) string {
		i := slices.Index(cmd, f)
		require.True(t, i >= 0 && i+1 < len(cmd), "llama-server has %s: %v", f, cmd)
		return cmd[i+1]
	}
	num := func(f string) int {
		n, err := strconv.Atoi(flag(f))
		require.NoError(t, err, f)
		return n
	}
	require.Contains(t, cmd, "--embedding")
	require.Equal(t, "mean", flag("--pooling"))
	require.Equal(t, w.Model, flag("--alias"), "its model id is EMBED_MODEL")
	require.Equal(t, port, flag("--port"))
	require.GreaterOrEqual(t, num("--ubatch-size"), w.Context, "an input of EMBED_CONTEXT tokens fits one micro-batch")
	require.GreaterOrEqual(t, num("--batch-size"), num("--ubatch-size"))
	require.GreaterOrEqual(t, num("--ctx-size"), num("--parallel")*w.Context, "every slot holds a whole input")
	require.Equal(t, num("--parallel"), w.CallsPerHost, "one call in flight per slot")
	require.Equal(t, "gpu", ls.Deploy.Resources.Reservations.Devices[0].Capabilities[0])
	require.NotNil(t, ls.HealthCheck)

	prep := service(t, p, "model-prepare")
	require.Equal(t, []string{"model", "prepare"}, []string(prep.Command)[:2])
	out := []string(prep.Command)[3]
	require.Equal(t, "/prepared/"+filepath.Base(out), flag("--model"), "llama-server reads what model-prepare writes")
	shared := func(s types.ServiceConfig, dir string) string {
		for _, v := range s.Volumes {
			if v.Target == dir {
				return v.Source
			}
		}
		t.Fatalf("%s mounts nothing at %s", s.Name, dir)
		return ""
	}
	require.Equal(t, shared(prep, filepath.Dir(out)), shared(ls, "/prepared"))

	requireDependsOn(t, ls, "model-prepare", "service_completed_successfully")
	requireDependsOn(t, ws, name, "service_healthy")
	require.NotContains(t, ws.DependsOn, "ollama")
	require.NotContains(t, ws.DependsOn, "model")
	require.NotContains(t, p.Services, "ollama", "Ollama does not start")
	require.NotContains(t, p.Services, "model")
}

// The runners override puts three Ollamas on one GPU, sharing the model
// store, all driven by the one worker.
func TestComposeOllamaRunners(t *testing.T) {
	p := load(t, nil, "compose.ollama-runners.yml")
	ws := service(t, p, "worker")
	w := configOf(t, ws)
	require.Equal(t, "ollama", w.Backend)
	require.Len(t, w.OllamaHosts, 3)
	for _, h := range w.OllamaHosts {
		name, _, err := net.SplitHostPort(h.Host)
		require.NoError(t, err)
		s := service(t, p, name)
		require.Equal(t, []string{"0"}, s.Deploy.Resources.Reservations.Devices[0].IDs, "%s is on GPU 0", name)
		requireVolumeAt(t, p, s, "/root/.ollama")
		require.Equal(t, "ollama-models", s.Volumes[0].Source, "%s shares the model store", name)
		requireDependsOn(t, ws, name, "service_healthy")
	}
	require.Equal(t, 1, w.CallsPerHost)
}

// envExample is every VAR=value line of .env.example, commented or not.
func envExample(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(".env.example")
	require.NoError(t, err)
	defer f.Close()
	listed := map[string]string{}
	sc := bufio.NewScanner(f)
	line := regexp.MustCompile(`^#?\s*([A-Z][A-Z0-9_]*)=(.*)$`)
	for sc.Scan() {
		if m := line.FindStringSubmatch(sc.Text()); m != nil {
			listed[m[1]] = m[2]
		}
	}
	require.NoError(t, sc.Err())
	return listed
}

// .env.example lists every variable the binaries read with its default.
func TestEnvExampleListsEverySetting(t *testing.T) {
	listed := envExample(t)
	for _, s := range config.Settings() {
		def, ok := listed[s.Env]
		require.True(t, ok, ".env.example lacks %s", s.Env)
		require.Equal(t, s.Default, def, "%s's default in .env.example", s.Env)
	}
	// And the compose-only ones the compose file interpolates.
	compose, err := os.ReadFile("../docker-compose.yml")
	require.NoError(t, err)
	for _, m := range regexp.MustCompile(`\$\{([A-Z][A-Z0-9_]*)`).FindAllStringSubmatch(string(compose), -1) {
		_, ok := listed[m[1]]
		require.True(t, ok || slices.ContainsFunc(config.Settings(), func(s config.Setting) bool { return s.Env == m[1] }), ".env.example lacks %s", m[1])
	}
}
