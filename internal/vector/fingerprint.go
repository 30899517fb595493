package vector

import "strings"

// Fingerprint names the vector space a model serves: the digest of the
// model as its server stores it (Ollama's manifest: weights, metadata and
// parameters) and the server's version. Vectors of two fingerprints may
// not be comparable. Workers report it with every reply and heartbeat; the
// sync records it beside every stored vector.
type Fingerprint struct {
	Digest        string `json:"digest"`
	OllamaVersion string `json:"ollama_version,omitempty"`
}

// ShortDigest is the first 12 hex digits of the digest, for logs.
func (f Fingerprint) ShortDigest() string {
	d := strings.TrimPrefix(f.Digest, "sha256:")
	return d[:min(12, len(d))]
}
