package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Placement is where every stream lives: how many servers keep a copy and
// which servers may (by their JetStream tags). The zero value is "auto"
// copies (see ResolveReplicas), anywhere.
type Placement struct {
	Replicas int      // 0: auto, resolved when the stream is made
	Tags     []string // server tags every copy's server must carry
}

// ResolveReplicas turns EMBED_STREAM_REPLICAS into a count: 0 ("auto")
// means 3 when nc is connected to a cluster, 1 otherwise. It is resolved
// when a stream is made, once the connection is up.
func ResolveReplicas(nc *nats.Conn, replicas int) int {
	if replicas > 0 {
		return replicas
	}
	if nc.ConnectedClusterName() != "" {
		return 3
	}
	return 1
}

// EnsureStream creates cfg's stream or updates it to cfg, placed by p. It
// never lowers an existing stream's replica count (an operator's
// `nats stream edit --replicas 3` stays), and keeps its placement when p
// names no tags.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, p Placement) (jetstream.Stream, error) {
	cfg.Replicas = ResolveReplicas(js.Conn(), p.Replicas)
	if len(p.Tags) > 0 {
		cfg.Placement = &jetstream.Placement{Tags: p.Tags}
	}
	s, err := js.Stream(ctx, cfg.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		s, err = js.CreateStream(ctx, cfg)
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return s, streamError(cfg, err)
		}
		if s, err = js.Stream(ctx, cfg.Name); err != nil { // created meanwhile by another process
			return nil, streamError(cfg, err)
		}
	case err != nil:
		return nil, streamError(cfg, err)
	}
	old := s.CachedInfo().Config
	// Ours are the fields below; the rest (metadata, compression, an
	// operator's tuning) stay as they are.
	upd := old
	upd.Description, upd.Subjects = cfg.Description, cfg.Subjects
	upd.MaxMsgs, upd.MaxBytes, upd.MaxAge = cfg.MaxMsgs, cfg.MaxBytes, cfg.MaxAge
	upd.Discard, upd.Duplicates = cfg.Discard, cfg.Duplicates
	upd.MaxMsgsPerSubject, upd.MaxMsgSize = cfg.MaxMsgsPerSubject, cfg.MaxMsgSize
	upd.Replicas = max(cfg.Replicas, old.Replicas)
	if cfg.Placement != nil {
		upd.Placement = cfg.Placement
	}
	if sameStream(old, upd) {
		return s, nil
	}
	s, err = js.UpdateStream(ctx, upd)
	return s, streamError(upd, err)
}

// sameStream says whether updating old to cfg would change nothing we set.
func sameStream(old, cfg jetstream.StreamConfig) bool {
	samePlacement := (old.Placement == nil) == (cfg.Placement == nil) &&
		(old.Placement == nil || slices.Equal(old.Placement.Tags, cfg.Placement.Tags))
	return samePlacement && old.Replicas == cfg.Replicas && old.MaxMsgs == cfg.MaxMsgs && old.MaxBytes == cfg.MaxBytes &&
		old.MaxAge == cfg.MaxAge && old.Discard == cfg.Discard && old.MaxMsgsPerSubject == cfg.MaxMsgsPerSubject &&
		old.MaxMsgSize == cfg.MaxMsgSize && old.Duplicates == cfg.Duplicates && slices.Equal(old.Subjects, cfg.Subjects) &&
		old.Description == cfg.Description
}

// JetStream's error codes that say a stream does not fit where it is asked to go.
const (
	errCodeStorageExceeded      = 10047 // insufficient storage resources available
	errCodeInsufficientResource = 10023 // insufficient resources (cluster)
	errCodeNoSuitablePeers      = 10005 // no suitable peers for placement
	errCodeReplicasUnsupported  = 10074 // replicas > 1 on a lone server
)

// ErrStreamDoesNotFit is a stream the servers refuse as configured: a
// setting must change, and trying again will not help.
var ErrStreamDoesNotFit = errors.New("stream does not fit the servers")

// streamError says what failed, naming the setting to change when the
// stream does not fit the servers.
func streamError(cfg jetstream.StreamConfig, err error) error {
	if err == nil {
		return nil
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case errCodeStorageExceeded:
			if cfg.MaxBytes > 0 {
				return fmt.Errorf("%w: stream %s: the JetStream store cannot reserve EMBED_STREAM_MAX_BYTES=%d bytes (%s): lower EMBED_STREAM_MAX_BYTES or give the store (EMBED_DATA_DIR, or the nats-server's max_file_store) more room",
					ErrStreamDoesNotFit, cfg.Name, cfg.MaxBytes, apiErr.Description)
			}
		case errCodeInsufficientResource, errCodeNoSuitablePeers, errCodeReplicasUnsupported:
			tags := ""
			if cfg.Placement != nil && len(cfg.Placement.Tags) > 0 {
				tags = fmt.Sprintf(" tagged %v (EMBED_STREAM_TAGS)", cfg.Placement.Tags)
			}
			return fmt.Errorf("%w: stream %s: %d replicas (EMBED_STREAM_REPLICAS) need as many JetStream servers%s with room: %s",
				ErrStreamDoesNotFit, cfg.Name, cfg.Replicas, tags, apiErr.Description)
		}
	}
	return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
}
