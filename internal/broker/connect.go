package broker

import (
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Auth is how a client authenticates to NATS and checks its server: a
// user and password, a token or a credentials file, and TLS files. Secrets
// are never logged.
type Auth struct {
	User, Password, Token, Creds string
	TLSCA, TLSCert, TLSKey       string
}

// Connect opens a NATS connection that reconnects for ever and logs each
// change of state, with the credentials and TLS files of auth. With ns set
// it connects in-process to that server. extra options come last.
func Connect(url, name string, ns *server.Server, auth Auth, log *zap.Logger, extra ...nats.Option) (*nats.Conn, error) {
	log = log.Named("nats")
	opts := []nats.Option{
		nats.Name(name),
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
	switch {
	case auth.User != "":
		opts = append(opts, nats.UserInfo(auth.User, auth.Password))
	case auth.Token != "":
		opts = append(opts, nats.Token(auth.Token))
	case auth.Creds != "":
		opts = append(opts, nats.UserCredentials(auth.Creds))
	}
	if auth.TLSCA != "" {
		opts = append(opts, nats.RootCAs(auth.TLSCA))
	}
	if auth.TLSCert != "" {
		opts = append(opts, nats.ClientCert(auth.TLSCert, auth.TLSKey))
	}
	if ns != nil {
		opts = append(opts, nats.InProcessServer(ns))
		url = ns.ClientURL()
	}
	nc, err := nats.Connect(url, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s (NATS_URL): %w", url, err)
	}
	return nc, nil
}

// NewJetStream is jetstream.New with an error that says what failed.
func NewJetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return js, nil
}
