package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/waywo/embed/internal/ollama"
	"github.com/waywo/embed/internal/vector"
)

// Headers of job and reply messages. JetStream does not carry a message's
// reply subject to the consumer, so the requester's inbox travels in a header.
const (
	HeaderReply     = "Embed-Reply"
	HeaderRequestID = "Embed-Request-Id"
	HeaderDeadline  = "Embed-Deadline" // unix milliseconds
	HeaderInputType = "Embed-Input-Type"
	HeaderOffset    = "Embed-Offset" // index of the job's first document in its request

	HeaderStatus     = "Embed-Status"
	HeaderError      = "Embed-Error"
	HeaderErrorIndex = "Embed-Error-Index"
	HeaderCount      = "Embed-Count"
	HeaderDims       = "Embed-Dims"
	HeaderTokens     = "Embed-Tokens"
	HeaderWorker     = "Embed-Worker"
	HeaderModel      = "Embed-Model"
	HeaderDigest     = "Embed-Model-Digest"   // the model's digest in the Ollama that computed the vectors
	HeaderOllama     = "Embed-Ollama-Version" // that Ollama's version
)

// Input types.
const (
	InputDocument = "document"
	InputQuery    = "query"
)

// Reply status codes carried in HeaderStatus.
const (
	StatusOK          = "ok"
	StatusRejected    = "rejected"    // the model refused a document
	StatusUnavailable = "unavailable" // the model could not be reached in time
	StatusBadJob      = "bad_job"     // the job message itself was malformed
)

// maxJobDocuments bounds what a job decoder accepts, whatever the sender says.
const maxJobDocuments = 1 << 16

var (
	// ErrBadJob marks a job message that cannot be decoded: it is
	// terminated, never retried.
	ErrBadJob = errors.New("malformed job")
	// ErrBadReply marks a reply message that cannot be decoded.
	ErrBadReply = errors.New("malformed reply")
)

// Job is one unit of queued work: some documents of one request.
type Job struct {
	RequestID string
	ReplyTo   string
	Deadline  time.Time // zero: none
	InputType string
	Offset    int
	Documents []string
}

// Msg encodes the job. The request id and the job's offset make its
// Nats-Msg-Id: unique per request, never derived from content, so two
// requests with the same text are never deduplicated into one.
func (j Job) Msg(subject string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set(nats.MsgIdHdr, j.RequestID+"."+strconv.Itoa(j.Offset))
	m.Header.Set(HeaderRequestID, j.RequestID)
	m.Header.Set(HeaderReply, j.ReplyTo)
	m.Header.Set(HeaderOffset, strconv.Itoa(j.Offset))
	if !j.Deadline.IsZero() {
		m.Header.Set(HeaderDeadline, strconv.FormatInt(j.Deadline.UnixMilli(), 10))
	}
	if j.InputType != "" && j.InputType != InputDocument {
		m.Header.Set(HeaderInputType, j.InputType)
	}
	m.Data = EncodeDocuments(j.Documents)
	return m
}

// EncodeDocuments writes a count, then each document as length and bytes,
// all lengths as uvarints.
func EncodeDocuments(docs []string) []byte {
	n := binary.MaxVarintLen64
	for _, d := range docs {
		n += binary.MaxVarintLen64 + len(d)
	}
	b := make([]byte, 0, n)
	b = binary.AppendUvarint(b, uint64(len(docs)))
	for _, d := range docs {
		b = binary.AppendUvarint(b, uint64(len(d)))
		b = append(b, d...)
	}
	return b
}

// DecodeDocuments is the inverse of EncodeDocuments. It refuses anything but
// at least one non-empty, valid UTF-8 document and no trailing bytes.
func DecodeDocuments(b []byte) ([]string, error) {
	count, n := binary.Uvarint(b)
	if n <= 0 {
		return nil, fmt.Errorf("%w: no document count", ErrBadJob)
	}
	if count == 0 || count > maxJobDocuments || count > uint64(len(b)) {
		return nil, fmt.Errorf("%w: document count %d", ErrBadJob, count)
	}
	b = b[n:]
	docs := make([]string, 0, count)
	for i := range int(count) {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return nil, fmt.Errorf("%w: document %d: bad length", ErrBadJob, i)
		}
		d := b[n : n+int(l)]
		if len(d) == 0 {
			return nil, fmt.Errorf("%w: document %d is empty", ErrBadJob, i)
		}
		if !utf8.Valid(d) {
			return nil, fmt.Errorf("%w: document %d is not valid UTF-8", ErrBadJob, i)
		}
		docs = append(docs, string(d))
		b = b[n+int(l):]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrBadJob, len(b))
	}
	return docs, nil
}

// DecodeJob reads a job from a message's headers and body.
func DecodeJob(h nats.Header, data []byte) (Job, error) {
	j := Job{
		RequestID: h.Get(HeaderRequestID),
		ReplyTo:   h.Get(HeaderReply),
		InputType: h.Get(HeaderInputType),
	}
	if j.InputType == "" {
		j.InputType = InputDocument
	}
	var errs []error
	if j.RequestID == "" {
		errs = append(errs, errors.New("no request id"))
	}
	if !ValidSubject(j.ReplyTo) {
		errs = append(errs, fmt.Errorf("bad reply subject %q", j.ReplyTo))
	}
	if j.InputType != InputDocument && j.InputType != InputQuery {
		errs = append(errs, fmt.Errorf("unknown input type %q", j.InputType))
	}
	off, err := strconv.Atoi(h.Get(HeaderOffset))
	if err != nil || off < 0 {
		errs = append(errs, fmt.Errorf("bad offset %q", h.Get(HeaderOffset)))
	}
	j.Offset = off
	if s := h.Get(HeaderDeadline); s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ms <= 0 {
			errs = append(errs, fmt.Errorf("bad deadline %q", s))
		}
		j.Deadline = time.UnixMilli(ms)
	}
	docs, err := DecodeDocuments(data)
	if err != nil {
		errs = append(errs, err)
	}
	j.Documents = docs
	if err := errors.Join(errs...); err != nil {
		if !errors.Is(err, ErrBadJob) {
			err = fmt.Errorf("%w: %w", ErrBadJob, err)
		}
		return j, err
	}
	return j, nil
}

func ValidSubject(s string) bool {
	if s == "" || len(s) > 512 || strings.ContainsAny(s, " \t\r\n*>") {
		return false
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" {
			return false
		}
	}
	return true
}

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
		return ollama.ErrRejected
	case StatusBadJob:
		return ErrBadJob
	default:
		return ollama.ErrUnavailable
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
