package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
)

// Input types.
const (
	InputDocument = "document"
	InputQuery    = "query"
)

// maxJobDocuments bounds what a job decoder accepts, whatever the sender says.
const maxJobDocuments = 1 << 16

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
	if !IsReplySubject(j.ReplyTo) {
		errs = append(errs, fmt.Errorf("bad reply subject %q: not a subject under %s", j.ReplyTo, ReplyPrefix))
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
