// The memory budget of requests in flight.

package httpapi

import (
	"fmt"
	"io"
	"net/http"

	"golang.org/x/sync/semaphore"
)

// Bytes a request holds, as the budget counts them: its body as read and
// decoded (the raw bytes, the members, the items, the strings: about four
// times its size), then, once its documents are known, their vectors twice
// (the reply messages and the decoded floats) and the answer's encoding.
const (
	bodyCopies       = 4
	vectorCopies     = 2
	jsonBytesPerItem = 12 // a float32 as the shortest decimal, with its comma
)

// budget bounds the bytes of requests in flight. A request takes its share
// before its body is read (from Content-Length, or the most a body may be)
// and the rest once its documents are decoded; past the bound it is
// refused at once with 429 and Retry-After, and holds nothing.
type budget struct {
	sem   *semaphore.Weighted
	limit int64
}

func newBudget(limit int64) *budget {
	if limit <= 0 {
		return nil
	}
	return &budget{sem: semaphore.NewWeighted(limit), limit: limit}
}

// ErrOverBudget is a request refused because the bytes of the requests in
// flight are at EMBED_MAX_INFLIGHT_BYTES (429).
var ErrOverBudget = fmt.Errorf("the api holds EMBED_MAX_INFLIGHT_BYTES of requests in flight; try again shortly")

// hold is what one request holds of the budget; release it when done.
type hold struct {
	b *budget
	n int64
}

// take reserves n more bytes for h, or fails with ErrOverBudget.
func (h *hold) take(n int64) error {
	if h.b == nil || n <= 0 {
		return nil
	}
	if !h.b.sem.TryAcquire(n) {
		return &requestError{http.StatusTooManyRequests, fmt.Sprintf("%v (%d bytes more asked, limit %d)", ErrOverBudget, n, h.b.limit)}
	}
	h.n += n
	return nil
}

// shrink gives back what h holds beyond n.
func (h *hold) shrink(n int64) {
	if h.b != nil && h.n > n {
		h.b.sem.Release(h.n - n)
		h.n = n
	}
}

func (h *hold) release() { h.shrink(0) }

// admitBody takes the share of a body about to be read: from its
// Content-Length, or the most a body may be when the client sent none.
func (s *Server) admitBody(r *http.Request) (*hold, error) {
	h := &hold{b: s.budget}
	size := r.ContentLength
	if size < 0 || size > s.opts.Limits.MaxBodyBytes {
		size = s.opts.Limits.MaxBodyBytes
	}
	return h, h.take(bodyCopies * size)
}

// refuseUnread answers a request refused before its body was read (err),
// then reads and drops the body a client sends anyway. Go's server would
// otherwise close the connection under a client still uploading, whose
// write then fails with a broken pipe before it reads the answer: the
// refusal would be lost. A client that sent Expect: 100-continue uploads
// nothing, so there is nothing to drop. Dropping costs bandwidth, not
// memory, and the server's read timeout bounds it.
func (s *Server) refuseUnread(w http.ResponseWriter, r *http.Request, err error, write func(http.ResponseWriter, *http.Request, error)) {
	rc := http.NewResponseController(w)
	duplex := r.Header.Get("Expect") == "" && r.ContentLength != 0 && rc.EnableFullDuplex() == nil
	write(w, r, err)
	if !duplex {
		return
	}
	if rc.Flush() == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, s.opts.Limits.MaxBodyBytes+1))
	}
}

// admitDocuments trims the body's share to what was read, then takes the
// share of the vectors of docs documents and of their answer.
func (s *Server) admitDocuments(h *hold, bodyBytes, docs int, json bool) error {
	h.shrink(bodyCopies * int64(bodyBytes))
	per := int64(s.opts.Dims) * 4 * vectorCopies
	if json {
		per += int64(s.opts.Dims) * jsonBytesPerItem
	}
	return h.take(int64(docs) * per)
}

// MaxRequestBytes is what the budget counts for the largest request the
// limits allow: EMBED_MAX_INFLIGHT_BYTES must hold at least one.
func MaxRequestBytes(l Limits, dims int) int64 {
	return bodyCopies*l.MaxBodyBytes + int64(l.MaxDocuments)*int64(dims)*(4*vectorCopies+jsonBytesPerItem)
}
