// Package vector is how an embedding is written down and which space it
// belongs to: the little-endian float32 layout (the description_embedding
// blob, NATS replies, binary HTTP answers), a fast exact parser of JSON
// arrays of floats (Ollama's replies, JSON answers), and the Fingerprint of
// the model that computed a vector. It depends on the standard library
// alone, so the public client can import it.
package vector
