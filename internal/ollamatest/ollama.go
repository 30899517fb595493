// Package ollamatest runs a real Ollama for tests: it builds the server from
// the Go module proxy once into a cache outside the repository, starts it on
// a free loopback port with its own model store, and creates a tiny
// deterministic BERT model generated here (no download).
//
// Outside CI, a machine that cannot build Ollama skips the tests that need
// it; with CI=true they fail instead.
package ollamatest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/waywo/embed/internal/proctest"
)

// Version is the Ollama release the tests build and run. Later releases
// fail to build from the module proxy (their module zips lack vendored
// headers).
const Version = "v0.10.1"

// ModelName is the name the tiny model is created under.
const ModelName = "waywo-tiny"

// BinEnv names an existing ollama binary to use instead of building one.
const BinEnv = "WAYWO_OLLAMA_BIN"

// Binary returns the path of an ollama binary, building it into the user
// cache on first use. Concurrent test processes wait on a file lock rather
// than build twice.
func Binary() (string, error) {
	if p := os.Getenv(BinEnv); p != "" {
		return p, nil
	}
	return proctest.Cached("ollama-"+Version, "ollama", func(dir, _ string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "install", "github.com/ollama/ollama@"+Version)
		cmd.Dir = dir // outside any module, so go.mod of the caller is not consulted
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=1", "GOFLAGS=-mod=mod")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go install github.com/ollama/ollama@%s: %w\n%s", Version, err, tail(out, 4000))
		}
		return nil
	})
}

// Server is a running Ollama with the tiny model created.
type Server struct {
	URL   string // http://127.0.0.1:port
	Model string
	Dims  int

	bin  string
	dir  string
	port int
	mu   sync.Mutex
	proc *proctest.Process // nil while stopped
}

// Unavailable ends a test that needs Ollama when none can be had: a failure
// under CI=true, a skip elsewhere.
func Unavailable(tb testing.TB, err error) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("Ollama is required under CI=true: %v", err)
	}
	tb.Skipf("Ollama unavailable (set %s or let the test build it): %v", BinEnv, err)
}

// StartServer runs an Ollama with the tiny model under dir, for tools such
// as the benchmark; the caller stops it. modelfile lines (such as
// "PARAMETER num_thread 1") are added to the model's Modelfile.
func StartServer(dir string, modelfile ...string) (*Server, error) { return start(dir, modelfile...) }

// testModelfile gives each test Ollama one compute thread. go test runs
// packages in parallel, each with its own Ollama; llama.cpp's threads
// spin-wait, and two runners of two threads each on a two-core machine slow
// each other down about tenfold.
var testModelfile = []string{"PARAMETER num_thread 1"}

var shared struct {
	once sync.Once
	s    *Server
	dir  string
	err  error
}

// Shared returns one Ollama for the whole test binary; StopShared, called
// from TestMain, stops it.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "ollamatest-")
		if shared.err == nil {
			shared.s, shared.err = start(shared.dir, testModelfile...)
		}
	})
	if shared.err != nil {
		Unavailable(tb, shared.err)
	}
	return shared.s
}

// StopShared stops the shared server, if one was started.
func StopShared() {
	if shared.s != nil {
		shared.s.Stop()
	}
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
}

func start(dir string, extra ...string) (*Server, error) {
	dir, err := filepath.Abs(dir) // the Modelfile's FROM must not be relative to it
	if err != nil {
		return nil, err
	}
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	m := DefaultTinyBERT()
	s := &Server{Model: ModelName, Dims: m.Dims, bin: bin, dir: dir}
	if err := s.launch(); err != nil {
		return nil, err
	}
	gguf := filepath.Join(dir, "model.gguf")
	f, err := os.Create(gguf)
	if err != nil {
		s.Stop()
		return nil, err
	}
	if err := m.WriteGGUF(f); err != nil {
		f.Close()
		s.Stop()
		return nil, err
	}
	if err := f.Close(); err != nil {
		s.Stop()
		return nil, err
	}
	modelfile := filepath.Join(dir, "Modelfile")
	lines := append([]string{"FROM " + gguf}, extra...)
	if err := os.WriteFile(modelfile, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		s.Stop()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "create", ModelName, "-f", modelfile)
	cmd.Env = os.Environ()
	for k, v := range s.env() {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		s.Stop()
		return nil, fmt.Errorf("ollama create: %w\n%s", err, tail(out, 2000))
	}
	return s, nil
}

func (s *Server) env() map[string]string {
	return map[string]string{
		"OLLAMA_HOST":    "127.0.0.1:" + strconv.Itoa(s.port),
		"OLLAMA_MODELS":  filepath.Join(s.dir, "models"),
		"HOME":           s.dir, // ollama writes its key pair under $HOME/.ollama
		"OLLAMA_NOPRUNE": "1",
	}
}

// Restart starts a stopped server again on the same address, with the
// models it had: for tests of an Ollama outage. A running server is left
// alone.
func (s *Server) Restart() error {
	s.mu.Lock()
	running := s.proc != nil
	s.mu.Unlock()
	if running {
		return nil
	}
	return s.launchOn(s.port)
}

// launch starts `ollama serve` on a free port and waits until it answers.
func (s *Server) launch() error {
	port, err := proctest.FreePort()
	if err != nil {
		return err
	}
	return s.launchOn(port)
}

func (s *Server) launchOn(port int) error {
	s.port = port
	s.URL = "http://127.0.0.1:" + strconv.Itoa(port)
	// Its own process group, so Stop also ends the runner it spawns; and
	// killed with the test binary if that dies first.
	p, err := proctest.Start(proctest.Spec{Name: "serve", Dir: s.dir, Bin: s.bin, Args: []string{"serve"}, Env: s.env(), Group: true})
	if err != nil {
		return fmt.Errorf("start ollama serve: %w", err)
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	done := p.Done()
	if err := s.waitUp(30*time.Second, done); err != nil {
		s.Stop()
		return fmt.Errorf("%w\n%s", err, s.Log())
	}
	return nil
}

func (s *Server) waitUp(limit time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	client := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		if resp, err := client.Get(s.URL + "/api/version"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("ollama serve exited during start")
		case <-tick.C:
		}
	}
	return fmt.Errorf("ollama serve did not answer on %s within %s", s.URL, limit)
}

// Pause stops the server and its runners where they are (SIGSTOP): their
// sockets stay open and answer nothing, as a stuck GPU or a frozen host
// would. Resume lets them go on.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p != nil {
		p.Signal(sig)
	}
}

// Stop ends the server and its runners. It is safe to call twice.
func (s *Server) Stop() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p != nil {
		p.Stop(10 * time.Second)
	}
}

// Log returns the end of the server's log, for failure messages.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "serve.log"))
	return tail(b, 4000)
}

func tail(b []byte, n int) string {
	b = bytes.TrimSpace(b)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// RunTests is the TestMain of a package that uses Shared: it runs the
// tests, stops the shared server, then fails the run on leaked goroutines.
func RunTests(m *testing.M) {
	code := m.Run()
	StopShared()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Exclusive makes the suites that run many processes at once (the fault
// suite, the compose end-to-end test), and the tests that keep both cores
// busy for a minute (the search's scans of 4096-d files under -race), take
// turns on this machine: on two cores one's load distorts the other's
// timing (the fault suite, run beside the compose test's image builds and
// containers, once saw a connection reset at an api's shutdown; run beside
// the search tests, its sync fell behind the backend's edits). It blocks until no other such suite runs and
// holds the machine-wide lock until the test ends. Other tests are not
// affected.
func Exclusive(tb testing.TB) {
	tb.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		tb.Fatalf("no cache directory: %v", err)
	}
	dir := filepath.Join(cache, "waywo-embed")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "heavy-suite.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		lock.Close()
		tb.Fatalf("lock %s: %v", lock.Name(), err)
	}
	if waited := time.Since(start); waited > time.Second {
		tb.Logf("waited %s for another heavy suite to finish", waited.Round(time.Second))
	}
	tb.Cleanup(func() {
		_ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
		lock.Close()
	})
}
