package broker

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"
)

// ServerOptions configure the nats-server the api starts when no NATS_URL
// is given.
type ServerOptions struct {
	Addr     string // host:port to listen on; port -1 picks a free one
	StoreDir string // JetStream file store
	// Roles, when set, are the server's users, one per role, each allowed
	// only what its role needs.
	Roles *Roles
	// User and Password, or Token, when set instead, are required of every
	// client, in-process ones included, and grant everything.
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
	case o.Roles != nil && (o.User != "" || o.Token != ""):
		return nil, fmt.Errorf("embedded nats: roles, or one user or token, not both")
	case o.Roles != nil:
		if opts.Users, opts.NoAuthUser, err = o.Roles.users(); err != nil {
			return nil, err
		}
	case o.User != "":
		opts.Username = o.User
		if opts.Password, err = hashSecret(o.Password); err != nil {
			return nil, err
		}
	case o.Token != "":
		if opts.Authorization, err = hashSecret(o.Token); err != nil {
			return nil, err
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	if o.Log != nil {
		l := natsLogger{s: o.Log.Named("nats").Sugar(), fault: o.StoreFault}
		// Every password is hashed; the one the server counts as plain
		// text is the anonymous publisher's, which has none.
		l.quiet = o.Roles != nil && o.Roles.Publisher == ""
		ns.SetLoggerV2(l, false, false, false)
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
	quiet bool // the plain-text password warning is debug
}

// Notices (the start-up banner among them) are debug: the api logs its own
// line when the server is ready.
func (l natsLogger) Noticef(format string, v ...any) { l.s.Debugf(format, v...) }

func (l natsLogger) Warnf(format string, v ...any) {
	if l.quiet && strings.HasPrefix(format, "Plaintext passwords detected") {
		l.s.Debugf(format, v...)
		return
	}
	l.s.Warnf(format, v...)
}

func (l natsLogger) Fatalf(format string, v ...any) { l.s.Errorf(format, v...) }

func (l natsLogger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.s.Error(msg)
	if l.fault != nil && (strings.Contains(msg, "critical write error") || strings.Contains(msg, "out of resources")) {
		l.fault(msg)
	}
}

func (l natsLogger) Debugf(format string, v ...any) { l.s.Debugf(format, v...) }

func (l natsLogger) Tracef(format string, v ...any) { l.s.Debugf(format, v...) }
