package broker

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/wire"
)

// Auth is how a client authenticates to NATS and checks its server: a
// user and password, a token or a credentials file, and TLS files. Secrets
// are never logged.
type Auth struct {
	User, Password, Token, Creds string
	TLSCA, TLSCert, TLSKey       string
}

// Dial says whom to connect to, and how.
type Dial struct {
	URL    string         // one or more, comma separated
	Server *server.Server // the embedded server: connect in-process (URL unused)
	Name   string         // the connection's name, seen by the server
	Auth   Auth
	// Role, when set, gives the connection its role's own inbox prefix
	// (wire.Role.InboxPrefix), which other roles may not read.
	Role wire.Role
	// Wait, when set, waits for a server that is not reachable yet (a
	// process started before its nats-server): Connect returns at once
	// with a connection that connects as soon as it can, logging once
	// when the wait starts and once when it ends. Refused credentials, bad
	// TLS or a bad URL still fail at once.
	Wait bool
	Log  *zap.Logger
}

// Connect opens a NATS connection that reconnects for ever and logs each
// change of state. extra options come last.
func Connect(d Dial, extra ...nats.Option) (*nats.Conn, error) {
	log := d.Log.Named("nats")
	opts := []nats.Option{
		nats.Name(d.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectBufSize(64 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("reconnected to NATS", zap.String("url", c.ConnectedUrlRedacted())) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("NATS async error", zap.String("subject", subject), zap.Error(err))
		}),
	}
	if p := d.Role.InboxPrefix(); p != "" {
		opts = append(opts, nats.CustomInboxPrefix(p))
	}
	a := d.Auth
	switch {
	case a.User != "":
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	case a.Token != "":
		opts = append(opts, nats.Token(a.Token))
	case a.Creds != "":
		opts = append(opts, nats.UserCredentials(a.Creds))
	}
	if a.TLSCA != "" {
		opts = append(opts, nats.RootCAs(a.TLSCA))
	}
	if a.TLSCert != "" {
		opts = append(opts, nats.ClientCert(a.TLSCert, a.TLSKey))
	}
	url := d.URL
	if d.Server != nil {
		opts = append(opts, nats.InProcessServer(d.Server))
		url = d.Server.ClientURL()
	}
	nc, err := nats.Connect(url, append(opts, extra...)...)
	if err == nil {
		return nc, nil
	}
	if !d.Wait || !Unreachable(err) {
		return nil, fmt.Errorf("connect to NATS at %s (NATS_URL): %w", RedactURL(url), err)
	}
	start := time.Now()
	log.Warn("waiting for NATS: no server reachable yet; connecting as soon as one is", zap.String("url", RedactURL(url)), zap.Error(err))
	opts = append(opts, nats.RetryOnFailedConnect(true), nats.ConnectHandler(func(c *nats.Conn) {
		log.Info("connected to NATS", zap.String("url", c.ConnectedUrlRedacted()), zap.Duration("waited", time.Since(start)))
	}))
	nc, err = nats.Connect(url, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s (NATS_URL): %w", RedactURL(url), err)
	}
	return nc, nil
}

// Unreachable says whether a failed connect found no server to talk to,
// which waiting can cure, rather than one that refused us.
func Unreachable(err error) bool {
	var ne net.Error
	return errors.Is(err, nats.ErrNoServers) || errors.As(err, &ne)
}

// RedactURL is a comma-separated list of URLs without their user info.
func RedactURL(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = url.User("REDACTED")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// NewJetStream is jetstream.New with an error that says what failed.
func NewJetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return js, nil
}
