package broker_test

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/wire"
)

// With NATS_USER/NATS_PASSWORD or NATS_TOKEN the embedded server requires
// them of every client, in-process ones included.
func TestEmbeddedServerRequiresConfiguredAuth(t *testing.T) {
	t.Parallel()
	log := zap.NewNop()
	for _, tc := range []struct {
		name      string
		opts      broker.ServerOptions
		good, bad broker.Auth
	}{
		{"UserPassword", broker.ServerOptions{User: "embed", Password: "pw"}, broker.Auth{User: "embed", Password: "pw"}, broker.Auth{User: "embed", Password: "nope"}},
		{"Token", broker.ServerOptions{Token: "tok"}, broker.Auth{Token: "tok"}, broker.Auth{Token: "other"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := tc.opts
			o.Addr, o.StoreDir = "127.0.0.1:0", t.TempDir()
			ns, err := broker.StartServer(o)
			require.NoError(t, err)
			t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })

			_, err = nats.Connect(ns.ClientURL(), nats.NoReconnect())
			require.Error(t, err, "no credentials")
			_, err = broker.Connect(broker.Dial{URL: ns.ClientURL(), Name: "t", Auth: tc.bad, Log: log})
			require.ErrorContains(t, err, "Authorization Violation")
			nc, err := broker.Connect(broker.Dial{URL: ns.ClientURL(), Name: "t", Auth: tc.good, Log: log})
			require.NoError(t, err)
			nc.Close()
			nc, err = broker.Connect(broker.Dial{Server: ns, Name: "t", Auth: tc.good, Log: log})
			require.NoError(t, err, "in-process with credentials")
			nc.Close()
		})
	}
}

// With roles the embedded server has one user per role, each logging in
// with its own password; a client without credentials is the publisher
// unless the publisher has a password too.
func TestEmbeddedServerRoles(t *testing.T) {
	t.Parallel()
	log := zap.NewNop()
	start := func(r broker.Roles) *server.Server {
		ns, err := broker.StartServer(broker.ServerOptions{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), Roles: &r, Log: log})
		require.NoError(t, err)
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		return ns
	}
	ns := start(broker.Roles{API: "a", Worker: "w"})
	for _, tc := range []struct {
		auth broker.Auth
		ok   bool
	}{
		{broker.RoleAuth(wire.RoleAPI, "a"), true},
		{broker.RoleAuth(wire.RoleWorker, "w"), true},
		{broker.RoleAuth(wire.RoleWorker, "a"), false},
		{broker.RoleAuth(wire.RoleAPI, "w"), false},
		{broker.Auth{}, true}, // the publisher
	} {
		nc, err := broker.Connect(broker.Dial{URL: ns.ClientURL(), Name: "t", Auth: tc.auth, Log: log})
		if !tc.ok {
			require.ErrorContains(t, err, "Authorization Violation", "%+v", tc.auth)
			continue
		}
		require.NoError(t, err, "%+v", tc.auth)
		nc.Close()
	}
	_, err := broker.StartServer(broker.ServerOptions{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), Roles: &broker.Roles{API: "a"}, User: "u", Password: "p", Log: log})
	require.ErrorContains(t, err, "not both")

	ns = start(broker.Roles{API: "a", Worker: "w", Publisher: "p"})
	_, err = nats.Connect(ns.ClientURL(), nats.NoReconnect())
	require.ErrorContains(t, err, "Authorization Violation", "no anonymous publisher once it has a password")
	nc, err := broker.Connect(broker.Dial{URL: ns.ClientURL(), Name: "t", Auth: broker.RoleAuth(wire.RolePublisher, "p"), Log: log})
	require.NoError(t, err)
	nc.Close()
}
