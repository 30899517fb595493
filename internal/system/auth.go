// How the api's connections log in to NATS, and the embedded server's
// roles.

package system

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/config"
	"github.com/waywo/embed/internal/wire"
)

// APIPasswordFile is where an api whose embedded server made up the api
// role's password keeps it (mode 0600), for the api's commands that join
// it (reindex, deadletters).
const APIPasswordFile = "nats-api.password"

// natsAuth sets how the api's connections and its in-process worker's log
// in before the embedded server, if any, is known: with NATS_URL, as the
// settings say (the worker as user worker with EMBED_NATS_WORKER_PASSWORD
// when that is set); with the embedded server's single user, as that user.
// The roles' passwords come with the server (roles).
func (s *System) natsAuth() {
	cfg := s.Config
	s.APIAuth, s.WorkerAuth = cfg.NATSAuth, cfg.NATSAuth
	if !cfg.OwnNATS() && cfg.NATSRoles.Worker != "" {
		s.WorkerAuth = withTLS(broker.RoleAuth(wire.RoleWorker, cfg.NATSRoles.Worker), cfg.NATSAuth)
	}
}

// roles are the embedded server's users' passwords: as configured, or made
// up for the api and the worker (the api's kept in APIPasswordFile). The
// api and the in-process worker log in with them.
func (s *System) roles() (broker.Roles, error) {
	r := s.Config.NATSRoles
	var err error
	if r.API == "" {
		if r.API, err = broker.RandomPassword(); err != nil {
			return r, err
		}
		if err := writeSecret(filepath.Join(s.Config.DataDir, APIPasswordFile), r.API); err != nil {
			return r, err
		}
	}
	if r.Worker == "" {
		if r.Worker, err = broker.RandomPassword(); err != nil {
			return r, err
		}
	}
	s.APIAuth = broker.RoleAuth(wire.RoleAPI, r.API)
	s.WorkerAuth = broker.RoleAuth(wire.RoleWorker, r.Worker)
	return r, nil
}

// joinAuth is how a command logs in to a running api's embedded server:
// as its single user, or as the api role with EMBED_NATS_API_PASSWORD or
// the password that api made up.
func joinAuth(cfg config.Config) (broker.Auth, error) {
	if !cfg.NATSRolesOn() {
		return cfg.NATSAuth, nil
	}
	if cfg.NATSRoles.API != "" {
		return broker.RoleAuth(wire.RoleAPI, cfg.NATSRoles.API), nil
	}
	b, err := os.ReadFile(filepath.Join(cfg.DataDir, APIPasswordFile))
	if err != nil {
		return broker.Auth{}, fmt.Errorf("the api role's password: set EMBED_NATS_API_PASSWORD as the running api has it, or EMBED_DATA_DIR to its data directory: %w", err)
	}
	return broker.RoleAuth(wire.RoleAPI, strings.TrimSpace(string(b))), nil
}

func withTLS(a, from broker.Auth) broker.Auth {
	a.TLSCA, a.TLSCert, a.TLSKey = from.TLSCA, from.TLSCert, from.TLSKey
	return a
}

// writeSecret writes a secret readable by this user only, replacing the
// file whole.
func writeSecret(path, secret string) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, werr := f.WriteString(secret + "\n")
	if err := errors.Join(werr, f.Chmod(0o600), f.Close()); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
