package proctest

import (
	"os"
	"path/filepath"
	"runtime"

	"github.com/nats-io/nuid"

	"github.com/waywo/embed/internal/wire"
)

// Roles are the NATS roles' passwords of one test or bench run, so that
// its processes log in as production's do.
type Roles struct{ API, Worker string }

// NewRoles makes up the passwords.
func NewRoles() Roles { return Roles{API: nuid.Next(), Worker: nuid.Next()} }

// Embedded is the settings of an api whose embedded nats-server has these
// roles (the publisher without a password).
func (r Roles) Embedded() map[string]string {
	return map[string]string{"EMBED_NATS_API_PASSWORD": r.API, "EMBED_NATS_WORKER_PASSWORD": r.Worker}
}

// Server is the environment of a nats-server whose config includes
// deploy/nats-roles.conf.
func (r Roles) Server() map[string]string {
	return map[string]string{"NATS_API_PASSWORD": r.API, "NATS_WORKER_PASSWORD": r.Worker}
}

// As is the settings of a process that logs in to NATS_URL as role.
func (r Roles) As(role wire.Role) map[string]string {
	env := map[string]string{}
	switch role {
	case wire.RoleAPI:
		env["NATS_USER"], env["NATS_PASSWORD"] = "api", r.API
	case wire.RoleWorker:
		env["NATS_USER"], env["NATS_PASSWORD"] = "worker", r.Worker
	}
	return env
}

// With is env with the entries of more added.
func With(env map[string]string, more ...map[string]string) map[string]string {
	for _, m := range more {
		for k, v := range m {
			env[k] = v
		}
	}
	return env
}

// RolesConf is deploy/nats-roles.conf, for a nats-server config to
// include: the roles as production's nats-server has them.
func RolesConf() ([]byte, error) {
	_, here, _, _ := runtime.Caller(0)
	return os.ReadFile(filepath.Join(filepath.Dir(here), "..", "..", "deploy", "nats-roles.conf"))
}
