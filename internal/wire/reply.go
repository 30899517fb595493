package wire

import (
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/waywo/embed/internal/vector"
)

// Reply status codes carried in HeaderStatus.
const (
	StatusOK          = "ok"
	StatusRejected    = "rejected"    // the model refused a document
	StatusUnavailable = "unavailable" // the model could not be reached in time
	StatusBadJob      = "bad_job"     // the job message itself was malformed
)

// ReplyError is a failure a worker reported for a job.
type ReplyError struct {
	Code    string // StatusRejected, StatusUnavailable, StatusBadJob
	Message string
	Index   int // document index within the job, or -1
}

func (e *ReplyError) Error() string {
	if e.Index >= 0 {
		return fmt.Sprintf("document %d: %s", e.Index, e.Message)
	}
	return e.Message
}

// Unwrap maps the code to the sentinel callers test with errors.Is.
func (e *ReplyError) Unwrap() error {
	switch e.Code {
	case StatusRejected:
		return ErrRejected
	case StatusBadJob:
		return ErrBadJob
	default:
		return ErrUnavailable
	}
}

// Reply is what a worker sends back for one job.
type Reply struct {
	Vectors [][]float32
	Tokens  int
	Worker  string
	Model   string
	// Fingerprint is the model's in the Ollama that computed the vectors.
	Fingerprint vector.Fingerprint
	Err         *ReplyError
}

// Msg encodes the reply: vectors as one little-endian float32 body.
func (r Reply) Msg(subject string) *nats.Msg {
	m := nats.NewMsg(subject)
	if r.Worker != "" {
		m.Header.Set(HeaderWorker, r.Worker)
	}
	if r.Model != "" {
		m.Header.Set(HeaderModel, r.Model)
	}
	if r.Fingerprint.Digest != "" {
		m.Header.Set(HeaderDigest, r.Fingerprint.Digest)
		m.Header.Set(HeaderOllama, r.Fingerprint.OllamaVersion)
	}
	if r.Err != nil {
		m.Header.Set(HeaderStatus, r.Err.Code)
		m.Header.Set(HeaderError, r.Err.Message)
		if r.Err.Index >= 0 {
			m.Header.Set(HeaderErrorIndex, strconv.Itoa(r.Err.Index))
		}
		return m
	}
	dims := 0
	if len(r.Vectors) > 0 {
		dims = len(r.Vectors[0])
	}
	m.Header.Set(HeaderStatus, StatusOK)
	m.Header.Set(HeaderCount, strconv.Itoa(len(r.Vectors)))
	m.Header.Set(HeaderDims, strconv.Itoa(dims))
	m.Header.Set(HeaderTokens, strconv.Itoa(r.Tokens))
	buf := make([]byte, 0, len(r.Vectors)*dims*4)
	for _, v := range r.Vectors {
		buf = vector.Append(buf, v)
	}
	m.Data = buf
	return m
}

// DecodeReply reads a reply that must hold want vectors of dims floats.
func DecodeReply(h nats.Header, data []byte, want, dims int) (Reply, error) {
	r := Reply{Worker: h.Get(HeaderWorker), Model: h.Get(HeaderModel), Fingerprint: vector.Fingerprint{Digest: h.Get(HeaderDigest), OllamaVersion: h.Get(HeaderOllama)}}
	status := h.Get(HeaderStatus)
	switch status {
	case StatusOK:
	case StatusRejected, StatusUnavailable, StatusBadJob:
		idx := -1
		if s := h.Get(HeaderErrorIndex); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 || n >= want {
				return r, fmt.Errorf("%w: error index %q", ErrBadReply, s)
			}
			idx = n
		}
		msg := h.Get(HeaderError)
		if msg == "" {
			msg = status
		}
		r.Err = &ReplyError{Code: status, Message: msg, Index: idx}
		return r, nil
	default:
		return r, fmt.Errorf("%w: status %q", ErrBadReply, status)
	}
	count, err := strconv.Atoi(h.Get(HeaderCount))
	if err != nil || count != want {
		return r, fmt.Errorf("%w: %q vectors, want %d", ErrBadReply, h.Get(HeaderCount), want)
	}
	d, err := strconv.Atoi(h.Get(HeaderDims))
	if err != nil || d != dims {
		return r, fmt.Errorf("%w: %q dimensions, want %d", ErrBadReply, h.Get(HeaderDims), dims)
	}
	if t := h.Get(HeaderTokens); t != "" {
		if r.Tokens, err = strconv.Atoi(t); err != nil || r.Tokens < 0 {
			return r, fmt.Errorf("%w: tokens %q", ErrBadReply, t)
		}
	}
	r.Vectors, err = vector.DecodeAll(data, count, dims)
	if err != nil {
		return r, fmt.Errorf("%w: %w", ErrBadReply, err)
	}
	return r, nil
}
