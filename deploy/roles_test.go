package deploy

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/wire"
)

var update = flag.Bool("update", false, "rewrite nats-roles.conf from internal/wire")

// rolesConf is deploy/nats-roles.conf as internal/wire's roles make it.
func rolesConf() string {
	var b strings.Builder
	b.WriteString(`# Generated from internal/wire/roles.go by
#   go test ./deploy -run TestNATSRolesConf -update
# Do not edit. The users of this system's three roles, each allowed only
# its subjects (docs/operations.md, "Security"). Include it in a
# nats-server's config; the passwords come from nats-server's environment,
# NATS_API_PASSWORD and NATS_WORKER_PASSWORD. The publisher has none: it
# is the user of every client that brings no credentials, and may only
# announce project changes.
authorization {
  users: [
`)
	for _, r := range wire.Roles {
		p := r.Permissions()
		fmt.Fprintf(&b, "    {\n      user: %q\n", r)
		if r != wire.RolePublisher {
			fmt.Fprintf(&b, "      password: $NATS_%s_PASSWORD\n", strings.ToUpper(string(r)))
		}
		b.WriteString("      permissions: {\n")
		for _, kind := range []struct {
			name string
			subj []string
		}{{"publish", p.Publish}, {"subscribe", p.Subscribe}} {
			fmt.Fprintf(&b, "        %s: { allow: [\n", kind.name)
			for _, s := range kind.subj {
				fmt.Fprintf(&b, "          %q\n", s)
			}
			b.WriteString("        ] }\n")
		}
		b.WriteString("      }\n    }\n")
	}
	fmt.Fprintf(&b, "  ]\n}\nno_auth_user: %q\n", wire.RolePublisher)
	return b.String()
}

// deploy/nats.conf grants each role what internal/wire says, and nothing
// to a client without credentials but the publisher's.
func TestNATSRolesConf(t *testing.T) {
	want := rolesConf()
	if *update {
		require.NoError(t, os.WriteFile("nats-roles.conf", []byte(want), 0o644))
	}
	got, err := os.ReadFile("nats-roles.conf")
	require.NoError(t, err)
	require.Equal(t, want, string(got), "nats-roles.conf is stale: run go test ./deploy -run TestNATSRolesConf -update")

	t.Setenv("NATS_API_PASSWORD", "api-secret")
	t.Setenv("NATS_WORKER_PASSWORD", "worker-secret")
	opts, err := server.ProcessConfigFile("nats.conf")
	require.NoError(t, err)
	require.Equal(t, string(wire.RolePublisher), opts.NoAuthUser)
	passwords := map[string]string{"api": "api-secret", "worker": "worker-secret", "publisher": ""}
	require.Len(t, opts.Users, len(wire.Roles))
	for _, u := range opts.Users {
		p := wire.Role(u.Username).Permissions()
		require.NotEmpty(t, p.Publish, "user %s is a role", u.Username)
		require.Equal(t, passwords[u.Username], u.Password, u.Username)
		require.Equal(t, p.Publish, u.Permissions.Publish.Allow, u.Username)
		require.Equal(t, p.Subscribe, u.Permissions.Subscribe.Allow, u.Username)
		require.Nil(t, u.Permissions.Response, u.Username)
	}

	// A nats-server runs from it: without credentials a client may
	// announce a project but not read jobs; the api's password is needed
	// for the api's subjects.
	opts.Port, opts.HTTPPort, opts.StoreDir, opts.NoSigs = server.RANDOM_PORT, 0, t.TempDir(), true
	opts.Host = "127.0.0.1"
	ns, err := server.NewServer(opts)
	require.NoError(t, err)
	go ns.Start()
	require.True(t, ns.ReadyForConnections(10*time.Second))
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })

	errs := make(chan error, 4)
	anon, err := nats.Connect(ns.ClientURL(), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	require.NoError(t, err)
	defer anon.Close()
	require.NoError(t, anon.Publish(wire.ProjectSubjectPrefix+"1", nil))
	_, err = anon.SubscribeSync(wire.JobsSubject)
	require.NoError(t, err)
	require.NoError(t, anon.Flush())
	select {
	case err := <-errs:
		require.ErrorContains(t, err, "Permissions Violation for Subscription to \""+wire.JobsSubject+"\"")
	case <-time.After(5 * time.Second):
		t.Fatal("a client without credentials subscribed to the jobs")
	}
	_, err = nats.Connect(ns.ClientURL(), nats.UserInfo("api", "wrong"))
	require.ErrorContains(t, err, "Authorization Violation")
	api, err := nats.Connect(ns.ClientURL(), nats.UserInfo("api", "api-secret"), nats.CustomInboxPrefix(wire.APIInboxPrefix))
	require.NoError(t, err)
	api.Close()
}
