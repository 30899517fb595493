package dispatch

import "errors"

var (
	// ErrTimeout means not every reply came before the request's deadline.
	ErrTimeout = errors.New("timed out waiting for embeddings")
	// ErrTooLarge means a document cannot travel in one NATS message.
	ErrTooLarge = errors.New("document too large for the queue")
)
