// Package config reads every setting of the api and the worker from the
// environment, once, into one struct with typed defaults, and validates it.
package config

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"go.uber.org/zap"

	"github.com/waywo/embed/internal/broker"
)

// Config is everything the api and the worker can be told.
type Config struct {
	HTTPAddr string // EMBED_HTTP_ADDR
	NATSURL  string // NATS_URL; empty starts an embedded nats-server
	NATSAddr string // EMBED_NATS_ADDR: where the embedded nats-server listens
	NATSAuth broker.Auth
	// NATSRoles: EMBED_NATS_{API,WORKER,PUBLISHER}_PASSWORD, the embedded
	// server's users' passwords (see NATSRolesOn).
	NATSRoles broker.Roles
	APIKey    string // EMBED_API_KEY; never logged

	OllamaHost    *url.URL      // OLLAMA_HOST
	OllamaHosts   []*url.URL    // EMBED_OLLAMA_HOSTS, or OLLAMA_HOST alone
	Backend       string        // EMBED_BACKEND: ollama or openai
	BackendURLs   []*url.URL    // EMBED_BACKEND_URLS, with openai
	BackendAPIKey string        // EMBED_BACKEND_API_KEY; never logged
	CallsPerHost  int           // EMBED_CALLS_PER_HOST, resolved from auto
	HandoverLead  time.Duration // EMBED_HANDOVER_LEAD, resolved from auto
	Model         string        // EMBED_MODEL
	Dimensions    int           // EMBED_DIMENSIONS
	DataDir       string        // EMBED_DATA_DIR

	RequestTimeout   time.Duration
	MaxDocuments     int
	MaxDocumentBytes int
	MaxBodyBytes     int64
	MaxInflightBytes int64 // EMBED_MAX_INFLIGHT_BYTES

	BatchSize    int
	BatchTokens  int // EMBED_BATCH_TOKENS, resolved from auto; 0 counts documents only
	BatchWait    time.Duration
	ModelTimeout time.Duration
	StallTimeout time.Duration // EMBED_STALL_TIMEOUT
	KeepAlive    time.Duration // negative keeps the model loaded for ever
	Truncate     bool
	Pull         bool
	QueryTask    string
	Context      int    // EMBED_CONTEXT: tokens of one input window (num_ctx and num_batch)
	ModelSource  string // EMBED_MODEL_SOURCE: the GGUF `api model install` installs
	ModelSHA256  string // EMBED_MODEL_SHA256

	AckWait    time.Duration
	MaxDeliver int

	StreamMaxMsgs  int64
	StreamMaxBytes int64
	StreamReplicas int      // EMBED_STREAM_REPLICAS; 0 is auto
	StreamTags     []string // EMBED_STREAM_TAGS
	Lanes          bool     // EMBED_LANES: interactive before bulk; false is one queue

	HeartbeatInterval time.Duration
	ShutdownTimeout   time.Duration
	CacheSize         int
	MetricsAddr       string
	PprofAddr         string
	Worker            string // EMBED_WORKER: auto, on or off (in-process worker in the api)
	WorkerID          string

	Sync              bool          // EMBED_SYNC: keep waywo_projects embeddings in sync
	DBPath            string        // WAYWO_DB
	ReconcileInterval time.Duration // EMBED_RECONCILE_INTERVAL; 0 reconciles only at start
	SyncBatches       int           // EMBED_SYNC_BATCHES

	LogFormat string
	LogLevel  zap.AtomicLevel

	values [][2]string // every setting's effective text, in table order, for LogFields
}

type setting struct {
	env, def, help string
	set            func(c *Config, v string) error
}

// redacted says how a setting's value is logged when it must not be logged
// as it is: secrets as whether they are set, URLs without their user info.
var redacted = map[string]func(string) string{
	"NATS_PASSWORD":                 isSet,
	"NATS_TOKEN":                    isSet,
	"EMBED_NATS_API_PASSWORD":       isSet,
	"EMBED_NATS_WORKER_PASSWORD":    isSet,
	"EMBED_NATS_PUBLISHER_PASSWORD": isSet,
	"EMBED_API_KEY":                 isSet,
	"EMBED_BACKEND_API_KEY":         isSet,
	"NATS_URL":                      broker.RedactURL,
	"EMBED_MODEL_SOURCE":            broker.RedactURL,
}

// settings is the single list of knobs: Load parses it, Usage prints it and
// a test checks the README documents each one.
var settings = []setting{
	{"EMBED_HTTP_ADDR", "127.0.0.1:8000", "HTTP listen address of the api", str(func(c *Config) *string { return &c.HTTPAddr }, checkHostPort)},
	{"NATS_URL", "", "NATS server URL(s), comma separated; empty starts an embedded nats-server in the api", str(func(c *Config) *string { return &c.NATSURL }, nil)},
	{"NATS_USER", "", "NATS user (with NATS_PASSWORD); the embedded nats-server then has this one user, who may do everything, instead of its roles", str(func(c *Config) *string { return &c.NATSAuth.User }, nil)},
	{"NATS_PASSWORD", "", "NATS password", str(func(c *Config) *string { return &c.NATSAuth.Password }, nil)},
	{"NATS_TOKEN", "", "NATS token; the embedded nats-server then requires it of everyone, who may then do everything, instead of its roles", str(func(c *Config) *string { return &c.NATSAuth.Token }, nil)},
	{"NATS_CREDS", "", "NATS credentials file (JWT and seed)", str(func(c *Config) *string { return &c.NATSAuth.Creds }, optional(fileExists))},
	{"NATS_TLS_CA", "", "CA file to verify the NATS server's certificate", str(func(c *Config) *string { return &c.NATSAuth.TLSCA }, optional(fileExists))},
	{"NATS_TLS_CERT", "", "client certificate file for NATS (with NATS_TLS_KEY)", str(func(c *Config) *string { return &c.NATSAuth.TLSCert }, optional(fileExists))},
	{"NATS_TLS_KEY", "", "client key file for NATS", str(func(c *Config) *string { return &c.NATSAuth.TLSKey }, optional(fileExists))},
	{"EMBED_API_KEY", "", "when set, every route but /health and /metrics needs Authorization: Bearer <key>", str(func(c *Config) *string { return &c.APIKey }, nil)},
	{"EMBED_NATS_ADDR", "127.0.0.1:4222", "listen address of the embedded nats-server (only when NATS_URL is empty)", str(func(c *Config) *string { return &c.NATSAddr }, checkHostPort)},
	{"EMBED_NATS_API_PASSWORD", "", "password of the embedded nats-server's user api (streams, jobs, replies, events); empty: a random one, kept in EMBED_DATA_DIR/nats-api.password for the api's commands", str(func(c *Config) *string { return &c.NATSRoles.API }, nil)},
	{"EMBED_NATS_WORKER_PASSWORD", "", "password of the embedded nats-server's user worker (pull jobs, reply): workers elsewhere log in as NATS_USER=worker with it; empty: a random one only the in-process worker knows. With NATS_URL: the in-process worker logs in as worker with it, when set", str(func(c *Config) *string { return &c.NATSRoles.Worker }, nil)},
	{"EMBED_NATS_PUBLISHER_PASSWORD", "", "password of the embedded nats-server's user publisher, who may only announce project changes (waywo.projects.changed.<id>); empty: clients without credentials are the publisher", str(func(c *Config) *string { return &c.NATSRoles.Publisher }, nil)},
	{"OLLAMA_HOST", "http://127.0.0.1:11434", "Ollama base URL; host:port and bare hosts are accepted, as Ollama does", func(c *Config, v string) (err error) {
		c.OllamaHost, err = ParseOllamaHost(v)
		return err
	}},
	{"EMBED_OLLAMA_HOSTS", "", "comma-separated Ollama URLs one worker drives; empty means OLLAMA_HOST alone", func(c *Config, v string) error {
		c.OllamaHosts = nil
		for _, h := range strings.Split(v, ",") {
			if h = strings.TrimSpace(h); h == "" {
				continue
			}
			u, err := ParseOllamaHost(h)
			if err != nil {
				return err
			}
			c.OllamaHosts = append(c.OllamaHosts, u)
		}
		return nil
	}},
	{"EMBED_BACKEND", "ollama", "what the workers call: ollama (Ollama's /api/embed at OLLAMA_HOST or EMBED_OLLAMA_HOSTS) or openai (any OpenAI-compatible /v1/embeddings at EMBED_BACKEND_URLS: vLLM, llama-server, TEI, Infinity)", func(c *Config, v string) error {
		if v != "ollama" && v != "openai" {
			return errors.New("want ollama or openai")
		}
		c.Backend = v
		return nil
	}},
	{"EMBED_BACKEND_URLS", "", "with EMBED_BACKEND=openai: comma-separated base URLs of the engines one worker drives, each where its /embeddings and /models are (http://vllm:8000/v1)", func(c *Config, v string) (err error) {
		c.BackendURLs, err = parseBaseURLs(v)
		return err
	}},
	{"EMBED_BACKEND_API_KEY", "", "with EMBED_BACKEND=openai: sent to the engines as Authorization: Bearer <key> when set", str(func(c *Config) *string { return &c.BackendAPIKey }, nil)},
	{"EMBED_CALLS_PER_HOST", "auto", "model calls a worker keeps in flight to each model server (a call counts until the server's answer begins: the worker reads and answers it while the next one computes); auto is 1 for Ollama, which computes one sequence at a time, and 16 for an openai engine, which packs the sequences of all calls in flight into its forward passes: a pass of 8192 tokens holds some 400 short queries, and the engine needs the next pass's sequences waiting while it computes one. With Ollama, 2 queues a second, full batch while the worker reads and answers the first: worth it when a batch takes milliseconds, not seconds", autoIntIn(func(c *Config) *int { return &c.CallsPerHost }, 1, 64)},
	{"EMBED_HANDOVER_LEAD", "auto", "how long before a model server that computes one call at a time is expected to finish a call (from what its recent calls took, per input and per token) the worker sends it the next, so that it does not sit idle while one call's answer and the next call travel between them; a query that arrives in that moment waits for the call just sent. auto is 3ms for Ollama (what the round trip between two calls took here, with room to spare) and 0, off, for an openai engine, which keeps EMBED_CALLS_PER_HOST calls in flight anyway", autoDurationIn(func(c *Config) *time.Duration { return &c.HandoverLead }, 0, time.Second)},
	{"EMBED_MODEL", "llama-embed-nemotron-8b", "the model: its Ollama name, or with EMBED_BACKEND=openai the engine's model id as its /v1/models lists it", str(func(c *Config) *string { return &c.Model }, nonEmpty)},
	{"EMBED_DIMENSIONS", "4096", "vector length the model must return; checked at start and on every reply", intIn(func(c *Config) *int { return &c.Dimensions }, 1, 65536)},
	{"EMBED_DATA_DIR", "./data", "data directory: the embedded JetStream store lives in jetstream/ under it. One api at a time: it holds embed.lock there, and a second api on the same directory refuses to start, naming the first (two would lose acknowledged events)", str(func(c *Config) *string { return &c.DataDir }, nonEmpty)},
	{"EMBED_REQUEST_TIMEOUT", "60s", "longest an /embed request waits for its vectors before 504", durationIn(func(c *Config) *time.Duration { return &c.RequestTimeout }, time.Millisecond, 24*time.Hour)},
	{"EMBED_MAX_DOCUMENTS", "1024", "documents per request (413 above)", intIn(func(c *Config) *int { return &c.MaxDocuments }, 1, 1_000_000)},
	{"EMBED_MAX_DOCUMENT_BYTES", "131072", "bytes per document (413 above); must fit one NATS message", intIn(func(c *Config) *int { return &c.MaxDocumentBytes }, 1, 64<<20)},
	{"EMBED_MAX_BODY_BYTES", "10485760", "bytes per HTTP request body (413 above)", positive64(func(c *Config) *int64 { return &c.MaxBodyBytes })},
	{"EMBED_MAX_INFLIGHT_BYTES", "268435456", "bytes the api's requests in flight may hold together (bodies read and decoded, vectors awaiting their answer); past it a request is refused at once with 429 and Retry-After, before its body is read when Content-Length says so. Must hold one largest request (EMBED_MAX_BODY_BYTES, EMBED_MAX_DOCUMENTS, EMBED_DIMENSIONS); without GOMEMLIMIT, the api's Go memory limit is set to this plus 192 MiB", positive64(func(c *Config) *int64 { return &c.MaxInflightBytes })},
	{"EMBED_BATCH_SIZE", "auto", "most documents a worker sends to the model in one call (and projects in one sync batch); auto is 32 for Ollama and 64 for an openai engine, whose calls' per-call costs (the worker's reading and answering) then stay small beside short inputs' passes", autoIntIn(func(c *Config) *int { return &c.BatchSize }, 1, 4096)},
	{"EMBED_BATCH_TOKENS", "auto", "most tokens (estimated from bytes, at a ratio learned from what the model server reports) a worker puts in one batch, besides EMBED_BATCH_SIZE, so that one long text does not hold a batch of short ones back; a job larger alone goes alone. auto is 8192 for an openai engine (size it to the engine's tokens per forward pass, vLLM's --max-num-batched-tokens) and 0, no token limit, for Ollama", autoIntIn(func(c *Config) *int { return &c.BatchTokens }, 0, 1<<24)},
	{"EMBED_BATCH_WAIT", "0s", "how long an idle worker waits for more documents before calling the model; 0 sends at once", durationIn(func(c *Config) *time.Duration { return &c.BatchWait }, 0, time.Minute)},
	{"EMBED_STALL_TIMEOUT", "5s", "a model call running this long, beyond 8 times what its inputs took in earlier calls, while no other call on the same server is answered either (an engine with a queue of calls in flight answers them in turn), or a server that does not answer its probe, counts as stalled: the worker gives the batch back to the queue for another worker and takes no jobs for that Ollama until a test embedding answers again; 0 leaves it to the probes", durationIn(func(c *Config) *time.Duration { return &c.StallTimeout }, 0, time.Hour)},
	{"EMBED_MODEL_TIMEOUT", "2m", "deadline of one model call (of one attempt, for an openai engine), time waiting in the server's queue included", durationIn(func(c *Config) *time.Duration { return &c.ModelTimeout }, time.Millisecond, time.Hour)},
	{"EMBED_KEEP_ALIVE", "-1", "how long Ollama keeps the model loaded after a call; -1 for ever", func(c *Config, v string) error {
		if v == "-1" {
			c.KeepAlive = -1
			return nil
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("want -1 or a duration such as 30m, got %q", v)
		}
		c.KeepAlive = d
		return nil
	}},
	{"EMBED_TRUNCATE", "true", "let Ollama truncate inputs longer than the context; false refuses them (400) instead", boolVar(func(c *Config) *bool { return &c.Truncate })},
	{"EMBED_QUERY_TASK", "Given a question, retrieve passages that answer the question", "task named in the instruction prefix of query inputs (input_type \"query\")", str(func(c *Config) *string { return &c.QueryTask }, nonEmpty)},
	{"EMBED_PULL", "false", "a worker pulls a missing model at start (logging progress) instead of exiting", boolVar(func(c *Config) *bool { return &c.Pull })},
	{"EMBED_CONTEXT", "8192", "tokens of one input window: `api model install` sets the model's num_ctx and its embedding batch size (num_batch) to it, since a bidirectional model needs a whole input in one micro-batch", intIn(func(c *Config) *int { return &c.Context }, 16, 1<<20)},
	{"EMBED_MODEL_SOURCE", "", "the GGUF `api model install` installs as EMBED_MODEL: a local path or an https URL (downloaded with resume); empty: the model must already be in Ollama (compose: /models/llama-embed-nemotron-8b.gguf, from EMBED_GGUF_DIR)", str(func(c *Config) *string { return &c.ModelSource }, nil)},
	{"EMBED_MODEL_SHA256", "", "SHA-256 (hex) the GGUF at EMBED_MODEL_SOURCE must have; empty: a download is checked against the checksum its server states, when it states one", str(func(c *Config) *string { return &c.ModelSHA256 }, optional(func(v string) error {
		if len(v) != 64 || strings.Trim(strings.ToLower(v), "0123456789abcdef") != "" {
			return errors.New("want 64 hex digits")
		}
		return nil
	}))},
	{"EMBED_ACK_WAIT", "5s", "JetStream ack wait of a job: a job held by a worker that died is redelivered this long after its last sign of life; a live worker reports progress on every job it holds three times per ack wait", durationIn(func(c *Config) *time.Duration { return &c.AckWait }, time.Second, time.Hour)},
	{"EMBED_MAX_DELIVER", "5", "attempts per job before it fails with an error reply", intIn(func(c *Config) *int { return &c.MaxDeliver }, 1, 1000)},
	{"EMBED_STREAM_MAX_MSGS", "100000", "most jobs the queue holds; more are refused with 429", positive64(func(c *Config) *int64 { return &c.StreamMaxMsgs })},
	{"EMBED_STREAM_MAX_BYTES", "1073741824", "most bytes the queue holds; more are refused with 429. The store must have room for it: the api refuses to start, naming this setting, when it has not", positive64(func(c *Config) *int64 { return &c.StreamMaxBytes })},
	{"EMBED_STREAM_REPLICAS", "auto", "copies of every stream (jobs, project events, dead letters), 1 to 5; auto: 3 on a NATS cluster, 1 otherwise. An existing stream with more is never lowered", func(c *Config, v string) error {
		if v == "auto" {
			c.StreamReplicas = 0
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 5 {
			return fmt.Errorf("want auto or 1 to 5, got %q", v)
		}
		c.StreamReplicas = n
		return nil
	}},
	{"EMBED_STREAM_TAGS", "", "comma-separated JetStream server tags every stream's servers must carry (placement), e.g. az:eu-1; empty: any server", func(c *Config, v string) error {
		c.StreamTags = nil
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				c.StreamTags = append(c.StreamTags, t)
			}
		}
		return nil
	}},
	{"EMBED_LANES", "true", "two lanes: interactive requests (/embed, /v1/embeddings) are taken before bulk work (the project sync, reindex, callers asking priority bulk), each lane with its own stream and limits; false puts everything in one first-in-first-out queue", boolVar(func(c *Config) *bool { return &c.Lanes })},
	{"EMBED_HEARTBEAT_INTERVAL", "2s", "how often workers announce they are alive; the api counts a worker gone after 3 missed", durationIn(func(c *Config) *time.Duration { return &c.HeartbeatInterval }, 10*time.Millisecond, time.Minute)},
	{"EMBED_SHUTDOWN_TIMEOUT", "30s", "on SIGTERM, how long in-flight requests and batches get to finish", durationIn(func(c *Config) *time.Duration { return &c.ShutdownTimeout }, 0, time.Hour)},
	{"EMBED_CACHE_SIZE", "1024", "vectors the api keeps for repeated (model, input type, text); 0 turns the cache off", intIn(func(c *Config) *int { return &c.CacheSize }, 0, 10_000_000)},
	{"EMBED_METRICS_ADDR", "127.0.0.1:9464", "listen address of a standalone worker's /metrics and /health; empty turns it off (the api serves /metrics on EMBED_HTTP_ADDR)", str(func(c *Config) *string { return &c.MetricsAddr }, optional(checkHostPort))},
	{"EMBED_PPROF_ADDR", "", "listen address for Go's net/http/pprof profiles (api and worker); empty turns it off", str(func(c *Config) *string { return &c.PprofAddr }, optional(checkHostPort))},
	{"EMBED_WORKER", "auto", "run a worker inside the api: auto (only with the embedded nats-server), on, off", func(c *Config, v string) error {
		switch v {
		case "auto", "on", "off":
			c.Worker = v
			return nil
		}
		return fmt.Errorf("want auto, on or off, got %q", v)
	}},
	{"EMBED_WORKER_ID", "", "worker name in logs and heartbeats; empty means <host>-<pid>", func(c *Config, v string) error {
		if v == "" {
			host, _ := os.Hostname()
			v = fmt.Sprintf("%s-%d", host, os.Getpid())
		}
		for _, r := range v {
			if !(unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("-_.", r)) {
				return fmt.Errorf("only letters, digits, '-', '_' and '.' are allowed, got %q", v)
			}
		}
		c.WorkerID = v
		return nil
	}},
	{"EMBED_SYNC", "true", "keep waywo_projects.description_embedding in sync with project events (the api owns WAYWO_DB); false serves /embed alone", boolVar(func(c *Config) *bool { return &c.Sync })},
	{"WAYWO_DB", "./data/waywo.db", "the WAYWO SQLite file; created with the backend's waywo_projects schema when missing", str(func(c *Config) *string { return &c.DBPath }, nonEmpty)},
	{"EMBED_RECONCILE_INTERVAL", "5m", "how often the api looks for projects whose embedding is missing or stale and queues them; 0 only at start", durationIn(func(c *Config) *time.Duration { return &c.ReconcileInterval }, 0, 7*24*time.Hour)},
	{"EMBED_SYNC_BATCHES", "4", "project batches the sync keeps in flight (each up to EMBED_BATCH_SIZE projects)", intIn(func(c *Config) *int { return &c.SyncBatches }, 1, 256)},
	{"EMBED_LOG_FORMAT", "auto", "auto (console on a terminal, JSON otherwise), json or console", func(c *Config, v string) error {
		if v != "auto" && v != "json" && v != "console" {
			return fmt.Errorf("want auto, json or console, got %q", v)
		}
		c.LogFormat = v
		return nil
	}},
	{"EMBED_LOG_LEVEL", "info", "debug, info, warn or error", func(c *Config, v string) (err error) {
		c.LogLevel, err = zap.ParseAtomicLevel(v)
		return err
	}},
}

// Load reads the environment through lookup (os.LookupEnv in production),
// applies defaults and validates. All problems are reported at once.
func Load(lookup func(string) (string, bool)) (Config, error) {
	var c Config
	var errs []error
	for _, s := range settings {
		v, ok := lookup(s.env)
		if !ok {
			v = s.def
		}
		v = strings.TrimSpace(v)
		if err := s.set(&c, v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", s.env, v, err))
		}
		c.values = append(c.values, [2]string{s.env, v})
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("invalid configuration: %w", err)
	}
	if len(c.OllamaHosts) == 0 {
		c.OllamaHosts = []*url.URL{c.OllamaHost}
	}
	if c.BatchSize < 0 {
		c.BatchSize = map[string]int{"ollama": 32, "openai": 64}[c.Backend]
	}
	if c.CallsPerHost < 0 {
		c.CallsPerHost = map[string]int{"ollama": 1, "openai": 16}[c.Backend]
	}
	if c.HandoverLead < 0 {
		c.HandoverLead = map[string]time.Duration{"ollama": 3 * time.Millisecond, "openai": 0}[c.Backend]
	}
	if c.BatchTokens < 0 {
		c.BatchTokens = map[string]int{"ollama": 0, "openai": 8192}[c.Backend]
	}
	if err := c.validate(); err != nil {
		return Config{}, fmt.Errorf("invalid configuration: %w", err)
	}
	return c, nil
}

func (c Config) validate() error {
	var errs []error
	a := c.NATSAuth
	if (a.User == "") != (a.Password == "") {
		errs = append(errs, errors.New("NATS_USER and NATS_PASSWORD go together"))
	}
	if a.User != "" && a.Token != "" {
		errs = append(errs, errors.New("set NATS_USER/NATS_PASSWORD or NATS_TOKEN, not both"))
	}
	if c.OwnNATS() && !c.NATSRolesOn() && c.NATSRoles != (broker.Roles{}) {
		errs = append(errs, errors.New("the embedded nats-server has either roles (EMBED_NATS_*_PASSWORD) or one user who may do everything (NATS_USER/NATS_PASSWORD or NATS_TOKEN), not both"))
	}
	if (a.TLSCert == "") != (a.TLSKey == "") {
		errs = append(errs, errors.New("NATS_TLS_CERT and NATS_TLS_KEY go together"))
	}
	if c.OwnNATS() && c.StreamReplicas > 1 {
		errs = append(errs, fmt.Errorf("EMBED_STREAM_REPLICAS=%d needs a NATS cluster (NATS_URL): the embedded nats-server is one server", c.StreamReplicas))
	}
	if c.Backend == "openai" && len(c.BackendURLs) == 0 {
		errs = append(errs, errors.New("EMBED_BACKEND=openai needs EMBED_BACKEND_URLS, the engines' base URLs (http://vllm:8000/v1)"))
	}
	if c.Backend == "ollama" && len(c.BackendURLs) > 0 {
		errs = append(errs, errors.New("EMBED_BACKEND_URLS is for EMBED_BACKEND=openai; Ollama's hosts are OLLAMA_HOST or EMBED_OLLAMA_HOSTS"))
	}
	if int64(c.MaxDocumentBytes) > c.MaxBodyBytes {
		errs = append(errs, fmt.Errorf("EMBED_MAX_DOCUMENT_BYTES (%d) is larger than EMBED_MAX_BODY_BYTES (%d)", c.MaxDocumentBytes, c.MaxBodyBytes))
	}
	return errors.Join(errs...)
}

// OwnNATS says whether the api starts its own (embedded) nats-server.
func (c Config) OwnNATS() bool { return c.NATSURL == "" }

// NATSRolesOn says whether the embedded nats-server has one user per role
// (the default), rather than the single user of NATS_USER or NATS_TOKEN.
func (c Config) NATSRolesOn() bool {
	return c.OwnNATS() && c.NATSAuth.User == "" && c.NATSAuth.Token == ""
}

// InProcessWorker says whether the api runs a worker next to the HTTP server.
func (c Config) InProcessWorker() bool {
	return c.Worker == "on" || (c.Worker == "auto" && c.OwnNATS())
}

// LogFields is the configuration as log fields, for the one line at start:
// every setting of the table under its name less the EMBED_ prefix, in
// lower case, as given or defaulted (secrets as "(set)", URLs without their
// user info), then the values resolved from others.
func (c Config) LogFields() []zap.Field {
	fields := make([]zap.Field, 0, len(c.values)+2)
	for _, kv := range c.values {
		v := kv[1]
		if redact, ok := redacted[kv[0]]; ok {
			v = redact(v)
		}
		fields = append(fields, zap.String(strings.ToLower(strings.TrimPrefix(kv[0], "EMBED_")), v))
	}
	return append(fields, zap.Stringers("ollama_hosts_resolved", c.OllamaHosts), zap.String("worker_id_resolved", c.WorkerID),
		zap.Int("batch_size_resolved", c.BatchSize), zap.Int("calls_per_host_resolved", c.CallsPerHost), zap.Int("batch_tokens_resolved", c.BatchTokens))
}

// Usage prints every setting with its default and meaning.
func Usage(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tMEANING")
	for _, s := range Settings() {
		def := s.Default
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Env, def, s.Help)
	}
	tw.Flush()
}

// Markdown writes the settings as the table of docs/configuration.md: one
// row per variable, in the order Load reads them.
func Markdown(w io.Writer) {
	fmt.Fprintln(w, "| variable | default | meaning |")
	fmt.Fprintln(w, "|---|---|---|")
	for _, s := range Settings() {
		def := "empty"
		if s.Default != "" {
			def = "`" + s.Default + "`"
		}
		fmt.Fprintf(w, "| `%s` | %s | %s |\n", s.Env, def, strings.ReplaceAll(s.Help, "|", "\\|"))
	}
}

// Setting describes one variable for generated and checked documentation.
type Setting struct{ Env, Default, Help string }

// Settings lists every variable Load reads, with its default and meaning.
func Settings() []Setting {
	out := make([]Setting, len(settings))
	for i, s := range settings {
		out[i] = Setting{s.env, s.def, s.help}
	}
	return out
}
