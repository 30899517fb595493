package wire

import "errors"

var (
	// ErrBadJob marks a job message that cannot be decoded: it is
	// terminated, never retried.
	ErrBadJob = errors.New("malformed job")
	// ErrBadReply marks a reply message that cannot be decoded.
	ErrBadReply = errors.New("malformed reply")

	// ErrRejected is a reply saying the model refused a document (an input
	// over the context with truncation off, say): retrying cannot help.
	ErrRejected = errors.New("input rejected by the model")
	// ErrUnavailable is a reply saying the model could not be used in time
	// (unreachable, failing, out of attempts): it may pass.
	ErrUnavailable = errors.New("model unavailable")
)
