package deploy

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/systemtest"
)

func TestMain(m *testing.M) { ollamatest.RunTests(m) }

// dashboardQueries are every PromQL expression of the provisioned
// dashboard.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile("grafana/dashboards/waywo-embed.json")
	require.NoError(t, err)
	var d struct {
		Panels []struct {
			Title      string
			Datasource struct{ UID string }
			Targets    []struct{ Expr string }
		}
	}
	require.NoError(t, json.Unmarshal(raw, &d))
	var exprs []string
	for _, p := range d.Panels {
		require.Equal(t, "prometheus", p.Datasource.UID, "%s uses the provisioned data source", p.Title)
		require.NotEmpty(t, p.Targets, p.Title)
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	return exprs
}

// Every series a dashboard query names is one a running api (with its
// in-process worker and the sync) serves on /metrics, after the traffic
// an operator would watch: requests good and bad, a project synced, a
// search.
func TestDashboardQueriesNameServedSeries(t *testing.T) {
	exprs := dashboardQueries(t)
	base := systemtest.RunAPI(t, ollamatest.Shared(t), nil,
		systemtest.Project{ID: 1, Title: "A dashboard", Description: "watched while it syncs", Hashtags: `["grafana"]`})
	post := func(path, body string) int {
		resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	metrics := func() string {
		resp, err := http.Get(base + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	require.Eventually(t, func() bool { return post("/embed", `{"documents":["watched"]}`) == http.StatusOK }, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, http.StatusBadRequest, post("/embed", `{"documents":`))
	require.Less(t, post("/projects/1/changed", ""), 300)
	require.Eventually(t, func() bool { return strings.Contains(metrics(), `embed_sync_projects_total{outcome="embedded"} 1`) }, 30*time.Second, 50*time.Millisecond)
	require.Eventually(t, func() bool { return post("/search", `{"query":"dashboards"}`) == http.StatusOK }, 30*time.Second, 50*time.Millisecond)

	served := map[string]bool{}
	for line := range strings.Lines(metrics()) {
		if name, _, _ := strings.Cut(strings.TrimSpace(line), "{"); name != "" && !strings.HasPrefix(name, "#") {
			name, _, _ = strings.Cut(name, " ")
			served[name] = true
		}
	}
	names := regexp.MustCompile(`\bembed_[a-z0-9_]+\b`)
	for _, e := range exprs {
		found := names.FindAllString(e, -1)
		require.NotEmpty(t, found, "%q names a series of ours", e)
		for _, n := range found {
			require.True(t, served[n], "%q names %s, which /metrics does not serve", e, n)
		}
	}
}

// The observability override starts Prometheus scraping the api and every
// worker where they serve /metrics, Grafana with the dashboard and its
// data source provisioned and a required admin password, and Jaeger with
// the api and workers exporting their traces to it; every port on
// loopback.
func TestComposeObservability(t *testing.T) {
	_, err := loadEnv(passwords, "compose.observability.yml")
	require.ErrorContains(t, err, "GRAFANA_ADMIN_PASSWORD", "Grafana needs its admin password")
	p := load(t, map[string]string{"GRAFANA_ADMIN_PASSWORD": "g-pw"}, "compose.observability.yml")
	for _, name := range []string{"prometheus", "grafana", "jaeger"} {
		s := service(t, p, name)
		for _, port := range s.Ports {
			require.Equal(t, "127.0.0.1", port.HostIP, "%s publishes on loopback only", name)
		}
		for _, v := range s.Volumes {
			if v.Type == "bind" {
				_, err := os.Stat(v.Source)
				require.NoError(t, err, "%s mounts %s", name, v.Source)
			}
		}
	}
	require.Equal(t, "g-pw", env(service(t, p, "grafana"))["GF_SECURITY_ADMIN_PASSWORD"])
	require.Equal(t, "false", env(service(t, p, "grafana"))["GF_AUTH_ANONYMOUS_ENABLED"])

	var prom struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
			DNSSDConfigs []struct {
				Names []string `yaml:"names"`
				Port  int      `yaml:"port"`
			} `yaml:"dns_sd_configs"`
		} `yaml:"scrape_configs"`
	}
	raw, err := os.ReadFile("prometheus.yml")
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(raw, &prom))
	require.Len(t, prom.ScrapeConfigs, 2)
	api := configOf(t, service(t, p, "api"))
	_, apiPort, _ := strings.Cut(api.HTTPAddr, ":")
	require.Equal(t, []string{"api:" + apiPort}, prom.ScrapeConfigs[0].StaticConfigs[0].Targets, "the api's /metrics is on its HTTP port")
	worker := configOf(t, service(t, p, "worker"))
	_, workerPort, _ := strings.Cut(worker.MetricsAddr, ":")
	require.Equal(t, []string{"worker"}, prom.ScrapeConfigs[1].DNSSDConfigs[0].Names, "every scaled worker")
	require.Equal(t, workerPort, strconv.Itoa(prom.ScrapeConfigs[1].DNSSDConfigs[0].Port))

	for _, name := range []string{"api", "worker"} {
		e := env(service(t, p, name))
		require.Equal(t, "http://jaeger:4318", e["OTEL_EXPORTER_OTLP_ENDPOINT"], "%s exports its traces", name)
	}
	var ds struct {
		Datasources []struct{ UID, URL string }
	}
	raw, err = os.ReadFile("grafana/provisioning/datasources/prometheus.yml")
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(raw, &ds))
	require.Equal(t, "prometheus", ds.Datasources[0].UID, "the dashboard's data source")
	require.Equal(t, "http://prometheus:9090", ds.Datasources[0].URL)
}
