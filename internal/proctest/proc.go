// Package proctest runs what tests and the benchmark start as processes:
// the project's binaries built once, child processes with their output in
// a log file and their CPU and memory read from /proc (Process), free
// loopback ports, and a small real disk that fills (SmallDisk, Fill). It
// depends on nothing of ours, so any package's tests can use it.
package proctest

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// FreePort is a loopback port nobody listened on a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreeAddr is FreePort as "127.0.0.1:port".
func FreeAddr() (string, error) {
	port, err := FreePort()
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(port), nil
}

// binaries are what BuildBinaries can build, by name.
var binaries = map[string]string{
	"api":         "github.com/waywo/embed/cmd/api",
	"worker":      "github.com/waywo/embed/cmd/worker",
	"nats-server": "github.com/nats-io/nats-server/v2", // the version in go.mod
}

// BuildBinaries builds the named binaries (api, worker, nats-server; the
// api and the worker when none is named) into dir.
func BuildBinaries(dir string, names ...string) error {
	if len(names) == 0 {
		names = []string{"api", "worker"}
	}
	for _, name := range names {
		pkg, ok := binaries[name]
		if !ok {
			return fmt.Errorf("no binary %q to build", name)
		}
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg).CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
		}
	}
	return nil
}

// Spec says what to start.
type Spec struct {
	Name string            // names the log file, <Dir>/<Name>.log
	Dir  string            // working directory and home of the log
	Bin  string            // the executable
	Args []string          //
	Env  map[string]string // on top of this process's environment
	// Group puts the process in its own process group, so that Stop and
	// Kill also end what it spawned (Ollama's runners).
	Group bool
	// Stdin gives the process a pipe for standard input (Process.Stdin).
	Stdin bool
}

// Process is a started child. It is killed if the starting process dies.
type Process struct {
	Name    string
	cmd     *exec.Cmd
	done    chan struct{}
	logPath string
	stdin   io.WriteCloser
	group   bool
}

// Start starts spec's process, its stdout and stderr appended to its log.
func Start(spec Spec) (*Process, error) {
	cmd := exec.Command(spec.Bin, spec.Args...)
	cmd.Dir = spec.Dir
	cmd.Env = os.Environ()
	for k, v := range spec.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logPath := filepath.Join(spec.Dir, spec.Name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: spec.Group}
	p := &Process{Name: spec.Name, cmd: cmd, done: make(chan struct{}), logPath: logPath, group: spec.Group}
	if spec.Stdin {
		if p.stdin, err = cmd.StdinPipe(); err != nil {
			logf.Close()
			return nil, err
		}
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	return p, nil
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Alive says whether it still runs.
func (p *Process) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// LogPath is the file its output is appended to.
func (p *Process) LogPath() string { return p.logPath }

// Stdin is the process's standard input (with Spec.Stdin).
func (p *Process) Stdin() io.Writer { return p.stdin }

// Signal sends sig to the process (to its group with Spec.Group).
func (p *Process) Signal(sig syscall.Signal) {
	if p.group {
		_ = syscall.Kill(-p.cmd.Process.Pid, sig)
		return
	}
	_ = p.cmd.Process.Signal(sig)
}

// Kill ends it at once (SIGKILL) and waits.
func (p *Process) Kill() {
	if p.Alive() {
		p.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// Stop asks it to end (SIGTERM), then kills it after grace.
func (p *Process) Stop(grace time.Duration) {
	if !p.Alive() {
		return
	}
	p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Kill()
	}
	if p.group { // a child that outlived its parent is in the same group
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// Wait waits up to limit for the process to exit and returns its exit code.
func (p *Process) Wait(limit time.Duration) (int, error) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), nil
	case <-time.After(limit):
		return -1, fmt.Errorf("%s did not exit within %s", p.Name, limit)
	}
}

// Tail is the last n bytes of its log.
func (p *Process) Tail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// Usage is a process's CPU time and memory, read from /proc.
type Usage struct {
	CPUSeconds float64 `json:"cpu_s"`
	PeakRSSMB  float64 `json:"peak_rss_mb"`
	RSSMB      float64 `json:"rss_mb"` // now
}

// Usage reads its CPU time, high-water RSS so far and RSS now.
func (p *Process) Usage() Usage {
	var u Usage
	pid := strconv.Itoa(p.cmd.Process.Pid)
	if b, err := os.ReadFile("/proc/" + pid + "/stat"); err == nil {
		// Fields after the ")" closing the command name; utime and stime are 14 and 15.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		if len(f) > 13 {
			ut, _ := strconv.ParseFloat(f[11], 64)
			st, _ := strconv.ParseFloat(f[12], 64)
			u.CPUSeconds = (ut + st) / 100 // USER_HZ
		}
	}
	if b, err := os.ReadFile("/proc/" + pid + "/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				u.PeakRSSMB = kb / 1024
			}
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				u.RSSMB = kb / 1024
			}
		}
	}
	return u
}

// Port is FreePort for a test, which fails when none can be had.
func Port(tb testing.TB) int {
	tb.Helper()
	port, err := FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	return port
}

// Addr is FreeAddr for a test.
func Addr(tb testing.TB) string {
	tb.Helper()
	return "127.0.0.1:" + strconv.Itoa(Port(tb))
}
