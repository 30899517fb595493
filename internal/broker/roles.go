package broker

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"

	"github.com/waywo/embed/internal/wire"
)

// Roles are the passwords of the embedded server's users, one per
// wire.Role, each named after its role and allowed its role's subjects
// only (wire.Role.Permissions). An empty Publisher makes the publisher
// the user of every client that brings no credentials: one on the host
// may announce a project change, and nothing more.
type Roles struct {
	API, Worker, Publisher string
}

// RoleAuth is how a client of role r logs in with password.
func RoleAuth(r wire.Role, password string) Auth {
	return Auth{User: string(r), Password: password}
}

// RandomPassword is 24 random bytes, base64url: for a role whose password
// is not configured.
func RandomPassword() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// ServerPermissions is p as nats-server takes it.
func ServerPermissions(p wire.Permissions) *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: p.Publish},
		Subscribe: &server.SubjectPermission{Allow: p.Subscribe},
	}
}

// users are the server's users for r, and the name of the one a client
// without credentials gets ("" for none): the publisher, when it has no
// password (the server logs such a client in with the user's stored
// password, so that one cannot be a hash).
func (r Roles) users() ([]*server.User, string, error) {
	pw := map[wire.Role]string{wire.RoleAPI: r.API, wire.RoleWorker: r.Worker, wire.RolePublisher: r.Publisher}
	var users []*server.User
	for _, role := range wire.Roles {
		h := ""
		if pw[role] != "" {
			var err error
			if h, err = hashSecret(pw[role]); err != nil {
				return nil, "", err
			}
		}
		users = append(users, &server.User{Username: string(role), Password: h, Permissions: ServerPermissions(role.Permissions())})
	}
	if r.Publisher == "" {
		return users, string(wire.RolePublisher), nil
	}
	return users, "", nil
}

// hashSecret is secret as the server keeps it: bcrypt, so that the
// process holds no password in plain text (nats-server warns otherwise).
// The lowest cost: a connection's login then costs a millisecond, and the
// hash never leaves the process.
func hashSecret(secret string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(secret), bcrypt.MinCost)
	if err != nil {
		return "", fmt.Errorf("hash a NATS password: %w", err)
	}
	return string(h), nil
}
