package wire

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/vector"
)

func TestJobRoundTrip(t *testing.T) {
	t.Parallel()
	j := Job{
		RequestID: "req1",
		ReplyTo:   "embed.reply.abc.req1.64",
		Deadline:  time.UnixMilli(1_800_000_000_123),
		InputType: InputQuery,
		Offset:    64,
		Documents: []string{"héllo wörld", "second\ndocument", strings.Repeat("x", 300)},
	}
	m := j.Msg(JobsSubject)
	require.Equal(t, "req1.64", m.Header.Get(nats.MsgIdHdr), "message id is per request, never per content")
	got, err := DecodeJob(m.Header, m.Data)
	require.NoError(t, err)
	require.Equal(t, j, got)

	// A document job without deadline leaves the optional headers out.
	j2 := Job{RequestID: "r", ReplyTo: "embed.reply.b", Offset: 0, Documents: []string{"x"}}
	m2 := j2.Msg(JobsSubject)
	require.Empty(t, m2.Header.Get(HeaderDeadline))
	got2, err := DecodeJob(m2.Header, m2.Data)
	require.NoError(t, err)
	require.Equal(t, InputDocument, got2.InputType)
	require.True(t, got2.Deadline.IsZero())
}

func TestDecodeJobRejects(t *testing.T) {
	t.Parallel()
	good := Job{RequestID: "r", ReplyTo: "embed.reply.b", Documents: []string{"x"}}.Msg(JobsSubject)
	for name, mutate := range map[string]func(m *nats.Msg){
		"NoRequestID":   func(m *nats.Msg) { m.Header.Del(HeaderRequestID) },
		"NoReply":       func(m *nats.Msg) { m.Header.Del(HeaderReply) },
		"WildcardReply": func(m *nats.Msg) { m.Header.Set(HeaderReply, "a.*") },
		"EmptyToken":    func(m *nats.Msg) { m.Header.Set(HeaderReply, "a..b") },
		"BadOffset":     func(m *nats.Msg) { m.Header.Set(HeaderOffset, "-1") },
		"BadDeadline":   func(m *nats.Msg) { m.Header.Set(HeaderDeadline, "soon") },
		"BadInputType":  func(m *nats.Msg) { m.Header.Set(HeaderInputType, "passage") },
		"EmptyBody":     func(m *nats.Msg) { m.Data = nil },
		"ZeroDocs":      func(m *nats.Msg) { m.Data = []byte{0} },
		"Garbage":       func(m *nats.Msg) { m.Data = []byte("hello") },
		"Trailing":      func(m *nats.Msg) { m.Data = append(EncodeDocuments([]string{"x"}), 'y') },
		"EmptyDoc":      func(m *nats.Msg) { m.Data = EncodeDocuments([]string{"x", ""}) },
		"BadUTF8":       func(m *nats.Msg) { m.Data = EncodeDocuments([]string{"\xff"}) },
		"HugeCount":     func(m *nats.Msg) { m.Data = []byte{0xff, 0xff, 0xff, 0xff, 0x0f} },
		"LengthPastEnd": func(m *nats.Msg) { m.Data = []byte{1, 100, 'a'} },
	} {
		m := nats.NewMsg(JobsSubject)
		for k, v := range good.Header {
			m.Header[k] = append([]string(nil), v...)
		}
		m.Data = append([]byte(nil), good.Data...)
		mutate(m)
		_, err := DecodeJob(m.Header, m.Data)
		require.ErrorIs(t, err, ErrBadJob, name)
	}
}

func FuzzDecodeJob(f *testing.F) {
	f.Add([]byte(EncodeDocuments([]string{"a", "bc"})), "r", "a.b", "0", "")
	f.Add([]byte{1, 1, 'x'}, "r", "_INBOX.x.y", "3", "1800000000000")
	f.Add([]byte{}, "", "", "", "x")
	f.Fuzz(func(t *testing.T, body []byte, id, reply, offset, deadline string) {
		h := nats.Header{}
		h.Set(HeaderRequestID, id)
		h.Set(HeaderReply, reply)
		h.Set(HeaderOffset, offset)
		h.Set(HeaderDeadline, deadline)
		j, err := DecodeJob(h, body)
		if err != nil {
			require.ErrorIs(t, err, ErrBadJob)
			return
		}
		require.NotEmpty(t, j.Documents)
		// What decodes re-encodes to the same bytes.
		require.Equal(t, body, EncodeDocuments(j.Documents))
	})
}

func TestReplyRoundTrip(t *testing.T) {
	t.Parallel()
	vecs := [][]float32{{1, 0, -1}, {0.5, 0.25, 0.125}}
	fp := vector.Fingerprint{Digest: "sha256:0123", OllamaVersion: "0.32.15"}
	m := Reply{Vectors: vecs, Tokens: 17, Worker: "w1", Model: "m", Fingerprint: fp}.Msg("x.y")
	r, err := DecodeReply(m.Header, m.Data, 2, 3)
	require.NoError(t, err)
	require.Nil(t, r.Err)
	require.Equal(t, vecs, r.Vectors)
	require.Equal(t, 17, r.Tokens)
	require.Equal(t, "w1", r.Worker)
	require.Equal(t, fp, r.Fingerprint)

	_, err = DecodeReply(m.Header, m.Data, 3, 3)
	require.ErrorIs(t, err, ErrBadReply, "count must match the job")
	_, err = DecodeReply(m.Header, m.Data, 2, 4)
	require.ErrorIs(t, err, ErrBadReply, "dimensions must match")
	_, err = DecodeReply(m.Header, m.Data[:20], 2, 3)
	require.ErrorIs(t, err, ErrBadReply, "body must hold every value")

	em := Reply{Err: &ReplyError{Code: StatusRejected, Message: "too long", Index: 1}}.Msg("x.y")
	r, err = DecodeReply(em.Header, em.Data, 2, 3)
	require.NoError(t, err)
	require.Equal(t, 1, r.Err.Index)
	require.ErrorIs(t, r.Err, ErrRejected)
	require.Equal(t, "document 1: too long", r.Err.Error())

	um := Reply{Err: &ReplyError{Code: StatusUnavailable, Message: "down", Index: -1}}.Msg("x.y")
	r, err = DecodeReply(um.Header, um.Data, 2, 3)
	require.NoError(t, err)
	require.True(t, errors.Is(r.Err, ErrUnavailable))

	bad := nats.NewMsg("x")
	bad.Header.Set(HeaderStatus, "weird")
	_, err = DecodeReply(bad.Header, nil, 1, 3)
	require.ErrorIs(t, err, ErrBadReply)
}

func FuzzDecodeReply(f *testing.F) {
	ok := Reply{Vectors: [][]float32{{1, 2}}}.Msg("x")
	f.Add(ok.Data, StatusOK, "1", "2", "0", "")
	f.Add([]byte{}, StatusRejected, "", "", "", "0")
	f.Add([]byte{1, 2, 3}, "ok", "1", "1", "-4", "")
	f.Fuzz(func(t *testing.T, body []byte, status, count, dims, tokens, index string) {
		h := nats.Header{}
		h.Set(HeaderStatus, status)
		h.Set(HeaderCount, count)
		h.Set(HeaderDims, dims)
		h.Set(HeaderTokens, tokens)
		h.Set(HeaderErrorIndex, index)
		r, err := DecodeReply(h, body, 1, 2)
		if err != nil {
			require.ErrorIs(t, err, ErrBadReply)
			return
		}
		if r.Err == nil {
			require.Len(t, r.Vectors, 1)
			require.Len(t, r.Vectors[0], 2)
		}
	})
}
