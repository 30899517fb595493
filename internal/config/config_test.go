package config

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/broker"
)

func env(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := kv[k]
		return v, ok
	}
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load(env(nil))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:8000", c.HTTPAddr)
	require.Equal(t, "", c.NATSURL)
	require.True(t, c.OwnNATS())
	require.True(t, c.InProcessWorker())
	require.Equal(t, "127.0.0.1:4222", c.NATSAddr)
	require.Equal(t, "http://127.0.0.1:11434", c.OllamaHost.String())
	require.Len(t, c.OllamaHosts, 1, "OLLAMA_HOST alone when EMBED_OLLAMA_HOSTS is empty")
	require.Equal(t, 4096, c.Dimensions)
	require.Equal(t, "./data", c.DataDir)
	require.Equal(t, 60*time.Second, c.RequestTimeout)
	require.Equal(t, time.Duration(0), c.BatchWait)
	require.Equal(t, time.Duration(-1), c.KeepAlive)
	require.True(t, c.Truncate)
	require.False(t, c.Pull)
	require.NotEmpty(t, c.WorkerID)
	require.Equal(t, "auto", c.LogFormat)
}

func TestLoadOverrides(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		env   map[string]string
		check func(t *testing.T, c Config)
	}{
		{"ExternalNATSRunsNoWorker", map[string]string{"NATS_URL": "nats://n:4222"}, func(t *testing.T, c Config) {
			require.False(t, c.OwnNATS())
			require.False(t, c.InProcessWorker())
		}},
		{"WorkerOnWithExternalNATS", map[string]string{"NATS_URL": "nats://n:4222", "EMBED_WORKER": "on"}, func(t *testing.T, c Config) {
			require.True(t, c.InProcessWorker())
		}},
		{"WorkerOffEmbedded", map[string]string{"EMBED_WORKER": "off"}, func(t *testing.T, c Config) {
			require.False(t, c.InProcessWorker())
		}},
		{"OllamaHostPortOnly", map[string]string{"OLLAMA_HOST": "10.0.0.5:11500"}, func(t *testing.T, c Config) {
			require.Equal(t, "http://10.0.0.5:11500", c.OllamaHost.String())
		}},
		{"OllamaBareHost", map[string]string{"OLLAMA_HOST": "gpu1"}, func(t *testing.T, c Config) {
			require.Equal(t, "http://gpu1:11434", c.OllamaHost.String())
		}},
		{"OllamaHTTPS", map[string]string{"OLLAMA_HOST": "https://ollama.example"}, func(t *testing.T, c Config) {
			require.Equal(t, "https://ollama.example:443", c.OllamaHost.String())
		}},
		{"SeveralOllamas", map[string]string{"EMBED_OLLAMA_HOSTS": "127.0.0.1:11434, gpu2:11434"}, func(t *testing.T, c Config) {
			require.Len(t, c.OllamaHosts, 2)
			require.Equal(t, "http://gpu2:11434", c.OllamaHosts[1].String())
		}},
		{"KeepAliveDuration", map[string]string{"EMBED_KEEP_ALIVE": "30m"}, func(t *testing.T, c Config) {
			require.Equal(t, 30*time.Minute, c.KeepAlive)
		}},
		{"Knobs", map[string]string{"EMBED_BATCH_SIZE": "8", "EMBED_BATCH_WAIT": "5ms", "EMBED_DIMENSIONS": "384", "EMBED_PULL": "1", "EMBED_TRUNCATE": "false"}, func(t *testing.T, c Config) {
			require.Equal(t, 8, c.BatchSize)
			require.Equal(t, 5*time.Millisecond, c.BatchWait)
			require.Equal(t, 384, c.Dimensions)
			require.True(t, c.Pull)
			require.False(t, c.Truncate)
		}},
		{"OllamaAutoDefaults", nil, func(t *testing.T, c Config) {
			require.Equal(t, "ollama", c.Backend)
			require.Equal(t, 32, c.BatchSize)
			require.Equal(t, 1, c.CallsPerHost)
			require.Zero(t, c.BatchTokens, "no token limit")
			require.Equal(t, 3*time.Millisecond, c.HandoverLead)
		}},
		{"OpenAIEngines", map[string]string{"EMBED_BACKEND": "openai", "EMBED_BACKEND_URLS": "http://vllm:8000/v1, https://tei.example/v1", "EMBED_BACKEND_API_KEY": "sk-1"}, func(t *testing.T, c Config) {
			require.Len(t, c.BackendURLs, 2)
			require.Equal(t, "https://tei.example/v1", c.BackendURLs[1].String())
			require.Equal(t, "sk-1", c.BackendAPIKey)
			require.Equal(t, 64, c.BatchSize)
			require.Equal(t, 16, c.CallsPerHost)
			require.Equal(t, 8192, c.BatchTokens)
			require.Zero(t, c.HandoverLead, "an engine keeps many calls in flight: no handover")
		}},
		{"AutoGivesWayToAValue", map[string]string{"EMBED_BACKEND": "openai", "EMBED_BACKEND_URLS": "http://e/v1", "EMBED_CALLS_PER_HOST": "3", "EMBED_BATCH_TOKENS": "0", "EMBED_BATCH_SIZE": "8", "EMBED_HANDOVER_LEAD": "1ms"}, func(t *testing.T, c Config) {
			require.Equal(t, 3, c.CallsPerHost)
			require.Equal(t, time.Millisecond, c.HandoverLead)
			require.Zero(t, c.BatchTokens)
			require.Equal(t, 8, c.BatchSize)
		}},
		{"WhitespaceTrimmed", map[string]string{"EMBED_MODEL": "  nomic  "}, func(t *testing.T, c Config) {
			require.Equal(t, "nomic", c.Model)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := Load(env(tc.env))
			require.NoError(t, err)
			tc.check(t, c)
		})
	}
}

func TestLoadRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"EMBED_DIMENSIONS": "0"}, "EMBED_DIMENSIONS"},
		{map[string]string{"EMBED_DIMENSIONS": "many"}, "want an integer"},
		{map[string]string{"EMBED_HTTP_ADDR": "8000"}, "EMBED_HTTP_ADDR"},
		{map[string]string{"EMBED_REQUEST_TIMEOUT": "60"}, "want a duration"},
		{map[string]string{"EMBED_BATCH_SIZE": "-1"}, "EMBED_BATCH_SIZE"},
		{map[string]string{"EMBED_KEEP_ALIVE": "forever"}, "EMBED_KEEP_ALIVE"},
		{map[string]string{"EMBED_PULL": "yes please"}, "want true or false"},
		{map[string]string{"EMBED_WORKER": "maybe"}, "want auto, on or off"},
		{map[string]string{"EMBED_LOG_FORMAT": "xml"}, "auto, json or console"},
		{map[string]string{"EMBED_MODEL": " "}, "EMBED_MODEL"},
		{map[string]string{"OLLAMA_HOST": "ftp://x"}, "unsupported scheme"},
		{map[string]string{"OLLAMA_HOST": "x:99999"}, "invalid port"},
		{map[string]string{"EMBED_OLLAMA_HOSTS": "a:1,ftp://b"}, "EMBED_OLLAMA_HOSTS"},
		{map[string]string{"EMBED_WORKER_ID": "a b"}, "EMBED_WORKER_ID"},
		{map[string]string{"EMBED_MAX_BODY_BYTES": "1000"}, "larger than EMBED_MAX_BODY_BYTES"},
		{map[string]string{"EMBED_BACKEND": "tei"}, "want ollama or openai"},
		{map[string]string{"EMBED_BACKEND": "openai"}, "needs EMBED_BACKEND_URLS"},
		{map[string]string{"EMBED_BACKEND_URLS": "http://e/v1"}, "is for EMBED_BACKEND=openai"},
		{map[string]string{"EMBED_BACKEND": "openai", "EMBED_BACKEND_URLS": "vllm:8000"}, "http(s) base URL"},
		{map[string]string{"EMBED_BACKEND": "openai", "EMBED_BACKEND_URLS": "http://u:secret@e/v1"}, "EMBED_BACKEND_API_KEY"},
		{map[string]string{"EMBED_CALLS_PER_HOST": "some"}, "EMBED_CALLS_PER_HOST"},
	} {
		_, err := Load(env(tc.env))
		require.ErrorContains(t, err, tc.want, "%v", tc.env)
	}
	// Every problem is reported at once.
	_, err := Load(env(map[string]string{"EMBED_DIMENSIONS": "0", "EMBED_BATCH_SIZE": "0"}))
	require.ErrorContains(t, err, "EMBED_DIMENSIONS")
	require.ErrorContains(t, err, "EMBED_BATCH_SIZE")
}

func TestLogFieldsRedactCredentials(t *testing.T) {
	t.Parallel()
	c, err := Load(env(map[string]string{"NATS_URL": "nats://user:secret@n1:4222,nats://n2:4222", "EMBED_API_KEY": "k3y"}))
	require.NoError(t, err)
	logged := map[string]string{}
	for _, f := range c.LogFields() {
		require.NotContains(t, f.String, "secret")
		require.NotContains(t, f.String, "k3y")
		logged[f.Key] = f.String
	}
	require.Equal(t, "(set)", logged["api_key"])
	require.Equal(t, "", logged["nats_password"])
	require.Equal(t, "nats://REDACTED@n1:4222,nats://n2:4222", logged["nats_url"])
	// Derived from the table: every setting is logged, under its name.
	for _, st := range Settings() {
		name := st.Env
		_, ok := logged[strings.ToLower(strings.TrimPrefix(name, "EMBED_"))]
		require.True(t, ok, "%s is not logged", name)
	}
	require.Equal(t, "2m", logged["model_timeout"], "as given or defaulted")
}

var update = flag.Bool("update", false, "rewrite docs/configuration.md's settings table from the code")

// docs/configuration.md's table is the one Markdown writes from the
// settings: every variable Load reads, with its default and meaning, and
// --help lists each too. go test ./internal/config -run TestConfigurationDoc -update
// rewrites it.
func TestConfigurationDocIsCurrent(t *testing.T) {
	const path = "../../docs/configuration.md"
	doc, err := os.ReadFile(path)
	require.NoError(t, err)
	begin, end := "<!-- settings: generated by go test ./internal/config -run TestConfigurationDoc -update -->\n", "<!-- /settings -->"
	i, j := bytes.Index(doc, []byte(begin)), bytes.Index(doc, []byte(end))
	require.True(t, i >= 0 && j > i, "%s lacks the settings markers", path)
	var table bytes.Buffer
	Markdown(&table)
	if *update {
		out := append(append(append([]byte(nil), doc[:i+len(begin)]...), table.Bytes()...), doc[j:]...)
		require.NoError(t, os.WriteFile(path, out, 0o644))
		return
	}
	require.Equal(t, table.String(), string(doc[i+len(begin):j]), "%s is stale: run go test ./internal/config -run TestConfigurationDoc -update", path)
	var usage bytes.Buffer
	Usage(&usage)
	for _, st := range Settings() {
		require.Contains(t, string(doc), "`"+st.Env+"`")
		require.Contains(t, usage.String(), st.Env)
	}
}

func TestSecuritySettings(t *testing.T) {
	t.Parallel()
	c, err := Load(env(map[string]string{"EMBED_API_KEY": "k3y-value", "NATS_USER": "u", "NATS_PASSWORD": "p4ss-value", "NATS_URL": "nats://n:4222"}))
	require.NoError(t, err)
	require.Equal(t, "k3y-value", c.APIKey)
	require.Equal(t, broker.Auth{User: "u", Password: "p4ss-value"}, c.NATSAuth)
	for _, f := range c.LogFields() {
		require.NotContains(t, f.String, "k3y-value")
		require.NotContains(t, f.String, "p4ss-value")
	}
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"NATS_USER": "u"}, "go together"},
		{map[string]string{"NATS_USER": "u", "NATS_PASSWORD": "p", "NATS_TOKEN": "t"}, "not both"},
		{map[string]string{"NATS_TLS_CERT": "/etc/hostname"}, "NATS_TLS_CERT and NATS_TLS_KEY"},
		{map[string]string{"NATS_TLS_CA": "/no/such/ca.pem"}, "no such file"},
		{map[string]string{"NATS_CREDS": "/no/such/user.creds"}, "no such file"},
		{map[string]string{"NATS_TOKEN": "t", "EMBED_NATS_WORKER_PASSWORD": "w"}, "either roles"},
	} {
		_, err := Load(env(tc.env))
		require.ErrorContains(t, err, tc.want, "%v", tc.env)
	}
	// The embedded server's roles are the default; their passwords are
	// never logged. One user instead turns them off.
	c, err = Load(env(map[string]string{"EMBED_NATS_API_PASSWORD": "api-s3cret", "EMBED_NATS_WORKER_PASSWORD": "w0rker-s3cret", "EMBED_NATS_PUBLISHER_PASSWORD": "pub-s3cret"}))
	require.NoError(t, err)
	require.True(t, c.NATSRolesOn())
	require.Equal(t, broker.Roles{API: "api-s3cret", Worker: "w0rker-s3cret", Publisher: "pub-s3cret"}, c.NATSRoles)
	for _, f := range c.LogFields() {
		require.NotContains(t, f.String, "s3cret")
	}
	c, err = Load(env(map[string]string{"NATS_USER": "u", "NATS_PASSWORD": "p"}))
	require.NoError(t, err)
	require.False(t, c.NATSRolesOn())
	// Defaults listen on loopback only.
	c, err = Load(env(nil))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(c.HTTPAddr, "127.0.0.1:"))
	require.True(t, strings.HasPrefix(c.NATSAddr, "127.0.0.1:"))
	require.True(t, strings.HasPrefix(c.MetricsAddr, "127.0.0.1:"))
}
