package broker_test

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/broker"
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
