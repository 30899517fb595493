package queue

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"
)

// ServerOptions configure the nats-server the api starts when no NATS_URL
// is given.
type ServerOptions struct {
	Addr     string // host:port to listen on; port -1 picks a free one
	StoreDir string // JetStream file store
	// User and Password, or Token, when set, are required of every client,
	// in-process ones included.
	User, Password, Token string
	Log                   *zap.Logger
	// StoreFault, when set, is told each error the server logs about
	// writing its store (a full disk): the stream that hit it stops storing
	// and never acknowledges again until JetStream restarts.
	StoreFault func(msg string)
}

// StoreSyncInterval is how often JetStream's file store is synced to disk,
// here and in deploy/nats.conf. The default is 2 minutes, and acknowledged
// messages written since the last sync can be lost on power failure
// (Jepsen, NATS 2.12.1). Syncing every write would put an fsync in every
// request's path; instead loss is made harmless: a lost project event is
// found again by the reconcile, and a lost job's requester times out (504)
// and retries. 10 s bounds the window at no measurable cost.
const StoreSyncInterval = 10 * time.Second

// StartServer starts a JetStream-enabled nats-server in this process and
// waits until it accepts connections. Stop it with Shutdown and
// WaitForShutdown.
func StartServer(o ServerOptions) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return nil, fmt.Errorf("embedded nats address %q: %w", o.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded nats port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName: "waywo-embed",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		// See StoreSyncInterval.
		SyncInterval: StoreSyncInterval,
	}
	switch {
	case o.User != "":
		opts.Username, opts.Password = o.User, o.Password
	case o.Token != "":
		opts.Authorization = o.Token
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	if o.Log != nil {
		ns.SetLoggerV2(natsLogger{s: o.Log.Named("nats").Sugar(), fault: o.StoreFault}, false, false, false)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("embedded nats did not start listening on %s within 30s", o.Addr)
	}
	return ns, nil
}

// natsLogger adapts zap to nats-server's logger, and tells fault about
// errors writing the store: the server reports them nowhere else.
type natsLogger struct {
	s     *zap.SugaredLogger
	fault func(string)
}

// Notices (the start-up banner among them) are debug: the api logs its own
// line when the server is ready.
func (l natsLogger) Noticef(format string, v ...any) { l.s.Debugf(format, v...) }
func (l natsLogger) Warnf(format string, v ...any)   { l.s.Warnf(format, v...) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.s.Errorf(format, v...) }
func (l natsLogger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.s.Error(msg)
	if l.fault != nil && (strings.Contains(msg, "critical write error") || strings.Contains(msg, "out of resources")) {
		l.fault(msg)
	}
}
func (l natsLogger) Debugf(format string, v ...any) { l.s.Debugf(format, v...) }
func (l natsLogger) Tracef(format string, v ...any) { l.s.Debugf(format, v...) }

// ErrDataDirInUse means another process holds the data directory.
var ErrDataDirInUse = errors.New("data directory in use")

// DirLock is a held lock on a data directory (EMBED_DATA_DIR).
type DirLock struct{ f *os.File }

// LockDataDir takes the data directory for this process: two nats-servers
// on one JetStream store each write their own block files, and after a
// restart one's acknowledged messages are gone. It fails at once, naming
// the holder (pid, host, address, since when), when another process holds
// it; holder describes this one for the next. The lock is the kernel's
// (flock), so a killed holder frees it.
func LockDataDir(dir, holder string) (*DirLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("data directory %s (EMBED_DATA_DIR): %w", dir, err)
	}
	path := filepath.Join(dir, "embed.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		who, _ := io.ReadAll(io.LimitReader(f, 1024))
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s (EMBED_DATA_DIR) is held by %s; two apis on one JetStream store lose acknowledged events: stop that one, or give this one its own EMBED_DATA_DIR",
				ErrDataDirInUse, dir, strings.TrimSpace(string(who)))
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(holder+"\n"), 0)
	}
	return &DirLock{f: f}, nil
}

// Release lets the directory go.
func (l *DirLock) Release() {
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	_ = l.f.Close()
}
