// Package broker is the NATS side every process shares: connecting (with
// credentials, TLS, reconnects for ever), the api's embedded nats-server
// with its data-directory lock and the guard that keeps its store serving
// through a full disk, stream placement and creation that keeps what it
// does not own, the health of a stream as /health reports it, what a
// failed publish means, and the back-off of loops whose fetches fail.
package broker
