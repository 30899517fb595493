package ollama

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/ollama/ollama/api"

	"github.com/waywo/embed/internal/engine"
	"github.com/waywo/embed/internal/vector"
)

// ReadFingerprint asks Ollama for the model's digest (from /api/tags) and
// its own version.
func ReadFingerprint(ctx context.Context, client *api.Client, name string) (vector.Fingerprint, error) {
	list, err := client.List(ctx)
	if err != nil {
		return vector.Fingerprint{}, err
	}
	fp := vector.Fingerprint{Digest: listedDigest(list, name)}
	if fp.Digest == "" {
		return vector.Fingerprint{}, fmt.Errorf("%w: %q is not among the models Ollama lists", engine.ErrModelNotFound, name)
	}
	fp.OllamaVersion, err = client.Version(ctx)
	return fp, err
}

// listedDigest is the digest Ollama lists for the model name; "" when it
// lists none.
func listedDigest(list *api.ListResponse, name string) string {
	for _, m := range list.Models {
		if sameModel(m.Name, name) || sameModel(m.Model, name) {
			return m.Digest
		}
	}
	return ""
}

// sameModel says whether Ollama's listed name is the configured one; a name
// without a tag means ":latest", as Ollama reads it.
func sameModel(listed, name string) bool {
	if !strings.Contains(name[strings.LastIndexByte(name, '/')+1:], ":") {
		name += ":latest"
	}
	return listed == name
}

// fingerprintBox holds a model's current fingerprint; the worker's probes
// update it while batches read it.
type fingerprintBox struct {
	mu sync.Mutex
	fp vector.Fingerprint
}

func (b *fingerprintBox) get() vector.Fingerprint {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fp
}

func (b *fingerprintBox) set(fp vector.Fingerprint) (old vector.Fingerprint) {
	b.mu.Lock()
	defer b.mu.Unlock()
	old, b.fp = b.fp, fp
	return old
}
