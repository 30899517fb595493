package httpapi

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/dispatch"
	"github.com/waywo/embed/internal/vector"
	"github.com/waywo/embed/internal/wire"
)

var testLimits = Limits{MaxDocuments: 4, MaxDocumentBytes: 32, MaxBodyBytes: 1024}

func TestDecodeEmbedRequest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body string
		status     int
		msg        string
	}{
		{"Valid", `{"documents":["a","b"]}`, 0, ""},
		{"ValidQuery", `{"documents":["a"],"input_type":"query"}`, 0, ""},
		{"UnknownFieldIgnored", `{"documents":["a"],"model":"x"}`, 0, ""},
		{"NullInputType", `{"documents":["a"],"input_type":null}`, 0, ""},
		{"NotJSON", `documents=a`, 400, "invalid JSON"},
		{"Truncated", `{"documents":["a"`, 400, "invalid JSON"},
		{"Empty", ``, 400, "invalid JSON"},
		{"TopLevelArray", `["a"]`, 400, "must be a JSON object"},
		{"TopLevelString", `"a"`, 400, "must be a JSON object"},
		{"Missing", `{}`, 400, `"documents" is required`},
		{"Null", `{"documents":null}`, 400, `"documents" is required`},
		{"EmptyArray", `{"documents":[]}`, 400, "must not be empty"},
		{"StringNotArray", `{"documents":"a"}`, 400, "must be an array of strings, got a string"},
		{"ObjectNotArray", `{"documents":{"a":1}}`, 400, "got an object"},
		{"NumberItem", `{"documents":["a",3]}`, 400, "documents[1] must be a string, got a number"},
		{"NullItem", `{"documents":[null]}`, 400, "documents[0] must be a string, got null"},
		{"ArrayItem", `{"documents":["a",["b"]]}`, 400, "documents[1] must be a string, got an array"},
		{"BoolItem", `{"documents":[true]}`, 400, "got a boolean"},
		{"EmptyItem", `{"documents":["a",""]}`, 400, "documents[1] is empty"},
		{"BlankItem", `{"documents":[" \n\t "]}`, 400, "documents[0] is empty"},
		{"NulItem", `{"documents":["a\u0000b"]}`, 400, "NUL"},
		{"InvalidUTF8", "{\"documents\":[\"a\xff\"]}", 400, "not valid UTF-8"},
		{"BadInputType", `{"documents":["a"],"input_type":"passage"}`, 400, "input_type"},
		{"NumberInputType", `{"documents":["a"],"input_type":1}`, 400, "input_type"},
		{"TopLevelNull", `null`, 400, "must be a JSON object"},
		{"KeysMatchExactly", `{"Documents":["a"]}`, 400, `"documents" is required`},
		{"ZeroWidthItem", `{"documents":["\u200b\u200d\ufeff"]}`, 400, "documents[0] is empty"},
		{"ControlItem", `{"documents":["\u0007\u001b "]}`, 400, "documents[0] is empty"},
		{"TooMany", `{"documents":["a","b","c","d","e"]}`, 413, "at most 4 per request"},
		{"TooLong", `{"documents":["` + strings.Repeat("x", 33) + `"]}`, 413, "at most 32 per document"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, err := decodeEmbedRequest([]byte(tc.body), testLimits)
			if tc.status == 0 {
				require.NoError(t, err)
				require.NotEmpty(t, req.Documents)
				return
			}
			require.Error(t, err)
			status, _ := statusOf(err)
			require.Equal(t, tc.status, status)
			require.Contains(t, err.Error(), tc.msg)
		})
	}
}

// A key that differs only in case is another key: it neither stands in for
// "documents" nor adds its documents.
func TestDecodeEmbedRequestKeysAreExact(t *testing.T) {
	t.Parallel()
	req, err := decodeEmbedRequest([]byte(`{"documents":["a"],"DOCUMENTS":["b","c"],"Input_Type":"passage"}`), testLimits)
	require.NoError(t, err)
	require.Equal(t, []string{"a"}, req.Documents)
	require.Equal(t, wire.InputDocument, req.InputType)
	_, err = decodeOpenAIRequest([]byte(`{"Input":"a"}`), "m", 2, testLimits)
	require.ErrorContains(t, err, "input")
}

func FuzzDecodeEmbedRequest(f *testing.F) {
	for _, s := range []string{`{"documents":["a","b"]}`, `{"documents":[1]}`, `{"documents":"x"}`, `[]`, `{"documents":["\u0000"]}`, `{"input_type":"query","documents":["q"]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeEmbedRequest(body, testLimits)
		if err != nil {
			status, _ := statusOf(err)
			require.Contains(t, []int{400, 413}, status, "%v", err)
			return
		}
		require.NotEmpty(t, req.Documents)
		require.LessOrEqual(t, len(req.Documents), testLimits.MaxDocuments)
		for _, d := range req.Documents {
			require.NotEmpty(t, strings.TrimSpace(d))
			require.LessOrEqual(t, len(d), testLimits.MaxDocumentBytes)
		}
	})
}

func TestAppendEmbeddingsIsValidJSONThatRoundTrips(t *testing.T) {
	t.Parallel()
	vecs := [][]float32{{0.1, -2.5e-8, 1, 0, float32(math.Copysign(0, -1))}, {3.4028235e38, 1.4e-45, -0.33333334}}
	b := AppendEmbeddings(nil, vecs)
	var got struct{ Embeddings [][]float32 }
	require.NoError(t, json.Unmarshal(b, &got))
	require.Equal(t, vecs, got.Embeddings)
	std, err := json.Marshal(map[string][][]float32{"embeddings": vecs})
	require.NoError(t, err)
	require.JSONEq(t, string(std), string(b))
}

// fakeQueue answers from a function, for refusals that need no queue.
type fakeQueue func(ctx context.Context, req dispatch.Request) (dispatch.Result, error)

func (f fakeQueue) Embed(ctx context.Context, req dispatch.Request) (dispatch.Result, error) {
	return f(ctx, req)
}

type fixedReadiness struct {
	n      int
	reason string
}

func (r fixedReadiness) Ready() (int, string) { return r.n, r.reason }

func TestHTTPStatuses(t *testing.T) {
	t.Parallel()
	newServer := func(emb fakeQueue, ready Readiness) *httptest.Server {
		s := New(emb, ready, Options{Model: "m", Dims: 2, Limits: testLimits, RequestTimeout: time.Second,
			Broker: func() error { return nil }}, zap.NewNop())
		srv := httptest.NewServer(s)
		t.Cleanup(srv.Close)
		return srv
	}
	ok := fakeQueue(func(_ context.Context, req dispatch.Request) (dispatch.Result, error) {
		out := make([][]float32, len(req.Documents))
		for i := range out {
			out[i] = []float32{float32(i), 1}
		}
		return dispatch.Result{Vectors: out}, nil
	})
	failWith := func(err error) fakeQueue {
		return func(context.Context, dispatch.Request) (dispatch.Result, error) { return dispatch.Result{}, err }
	}
	ready := fixedReadiness{n: 1}

	for _, tc := range []struct {
		name        string
		emb         fakeQueue
		ready       Readiness
		contentType string
		body        string
		status      int
		code        string
	}{
		{"OK", ok, ready, "application/json", `{"documents":["a","b"]}`, 200, ""},
		{"OKCharset", ok, ready, "application/json; charset=utf-8", `{"documents":["a"]}`, 200, ""},
		{"OKNoContentType", ok, ready, "", `{"documents":["a"]}`, 200, ""},
		{"WrongContentType", ok, ready, "text/plain", `{"documents":["a"]}`, 415, "unsupported_media_type"},
		{"FormContentType", ok, ready, "application/x-www-form-urlencoded", `{"documents":["a"]}`, 415, "unsupported_media_type"},
		{"BodyTooLarge", ok, ready, "application/json", `{"documents":["` + strings.Repeat("a", 2000) + `"]}`, 413, "too_large"},
		{"NoWorker", ok, fixedReadiness{reason: "no live worker"}, "application/json", `{"documents":["a"]}`, 503, "unavailable"},
		{"QueueFull", failWith(broker.ErrStreamFull), ready, "application/json", `{"documents":["a"]}`, 429, "queue_full"},
		{"Timeout", failWith(dispatch.ErrTimeout), ready, "application/json", `{"documents":["a"]}`, 504, "timeout"},
		{"ModelDown", failWith(wire.ErrUnavailable), ready, "application/json", `{"documents":["a"]}`, 503, "unavailable"},
		{"Rejected", failWith(&dispatch.DocumentError{Index: 3, Err: &wire.ReplyError{Code: wire.StatusRejected, Message: "too long", Index: -1}}), ready, "application/json", `{"documents":["a"]}`, 400, "rejected_by_model"},
		{"Unexpected", failWith(errors.New("boom")), ready, "application/json", `{"documents":["a"]}`, 500, "internal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(tc.emb, tc.ready)
			req, err := http.NewRequest(http.MethodPost, srv.URL+"/embed", strings.NewReader(tc.body))
			require.NoError(t, err)
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, tc.status, resp.StatusCode)
			require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			require.NotEmpty(t, resp.Header.Get("X-Request-Id"))
			var body map[string]any
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
			if tc.code == "" {
				require.Contains(t, body, "embeddings")
				return
			}
			require.Equal(t, tc.code, body["code"])
			require.NotEmpty(t, body["error"])
			require.Equal(t, resp.Header.Get("X-Request-Id"), body["request_id"])
			if tc.status == 429 || tc.status == 503 {
				require.Equal(t, "1", resp.Header.Get("Retry-After"))
			}
		})
	}

	t.Run("MethodNotAllowed", func(t *testing.T) {
		t.Parallel()
		srv := newServer(ok, ready)
		resp, err := http.Get(srv.URL + "/embed")
		require.NoError(t, err)
		var body map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		resp.Body.Close()
		require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
		require.Equal(t, "POST", resp.Header.Get("Allow"))
		require.Equal(t, "method_not_allowed", body["code"])

		resp, err = http.Get(srv.URL + "/nope")
		require.NoError(t, err)
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		resp.Body.Close()
		require.Equal(t, http.StatusNotFound, resp.StatusCode)
		require.Equal(t, "not_found", body["code"])
	})

	t.Run("HealthWithoutBroker", func(t *testing.T) {
		t.Parallel()
		s := New(ok, ready, Options{Model: "m", Dims: 2, Limits: testLimits, RequestTimeout: time.Second,
			Broker: func() error { return errors.New("connection is RECONNECTING") }}, zap.NewNop())
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/health", nil))
		require.Equal(t, http.StatusServiceUnavailable, rec.Code)
		require.Contains(t, rec.Body.String(), "RECONNECTING")
	})
}

func TestEmbedAnswersBinaryWhenAsked(t *testing.T) {
	t.Parallel()
	emb := fakeQueue(func(_ context.Context, req dispatch.Request) (dispatch.Result, error) {
		return dispatch.Result{Vectors: [][]float32{{1, -0.5}, {0.25, 2}}}, nil
	})
	s := New(emb, fixedReadiness{n: 1}, Options{Model: "m", Dims: 2, Limits: testLimits, RequestTimeout: time.Second,
		Broker: func() error { return nil }}, zap.NewNop())
	req := httptest.NewRequest(http.MethodPost, "/embed", strings.NewReader(`{"documents":["a","b"]}`))
	req.Header.Set("Accept", "application/octet-stream, application/json;q=0.5")
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "application/octet-stream", rec.Header().Get("Content-Type"))
	require.Equal(t, "2", rec.Header().Get("X-Embedding-Count"))
	require.Equal(t, "2", rec.Header().Get("X-Embedding-Dimensions"))
	vs, err := vector.DecodeAll(rec.Body.Bytes(), 2, 2)
	require.NoError(t, err)
	require.Equal(t, [][]float32{{1, -0.5}, {0.25, 2}}, vs)
}

// writeVectors streams an answer in chunks of at most 64 KB (plus one
// vector) that add up to the vectors one after another.
func TestWriteVectorsChunks(t *testing.T) {
	var vs [][]float32
	var want []byte
	for i := range 10 {
		v := make([]float32, 4096)
		for j := range v {
			v[j] = float32(i*4096+j) / 3
		}
		vs = append(vs, v)
		want = vector.Append(want, v)
	}
	var w chunkRecorder
	writeVectors(&w, vs)
	require.Equal(t, want, w.got)
	require.Greater(t, len(w.sizes), 1, "written in chunks")
	for _, n := range w.sizes {
		require.LessOrEqual(t, n, 64<<10)
	}
	w = chunkRecorder{}
	writeVectors(&w, nil)
	require.Empty(t, w.got)
}

type chunkRecorder struct {
	got   []byte
	sizes []int
}

func (c *chunkRecorder) Write(p []byte) (int, error) {
	c.got = append(c.got, p...)
	c.sizes = append(c.sizes, len(p))
	return len(p), nil
}

// A gzipped body is read (and its expanded size limited); another encoding
// is refused with 415; a Content-Length over the limit is refused with 413
// before the body is sent, when the client waits for 100 Continue.
func TestBodyEncodingAndSize(t *testing.T) {
	t.Parallel()
	s := New(fakeQueue(func(_ context.Context, req dispatch.Request) (dispatch.Result, error) {
		return dispatch.Result{Vectors: [][]float32{{1, 0}}}, nil
	}), fixedReadiness{n: 1}, Options{Model: "m", Dims: 2, Limits: testLimits, RequestTimeout: time.Second,
		Broker: func() error { return nil }}, zap.NewNop())
	srv := httptest.NewServer(s)
	defer srv.Close()
	gz := func(s string) []byte {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		_, _ = w.Write([]byte(s))
		_ = w.Close()
		return b.Bytes()
	}
	post := func(body []byte, encoding string) (int, map[string]any) {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/embed", bytes.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		if encoding != "" {
			req.Header.Set("Content-Encoding", encoding)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var out map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		return resp.StatusCode, out
	}
	status, body := post(gz(`{"documents":["a"]}`), "gzip")
	require.Equal(t, http.StatusOK, status, body)
	status, body = post(gz(`{"documents":["`+strings.Repeat(" ", 3000)+`a"]}`), "gzip")
	require.Equal(t, http.StatusRequestEntityTooLarge, status, "a small gzip that expands past the limit")
	require.Contains(t, body["error"], "expands to over 1024 bytes")
	status, body = post([]byte(`{"documents":["a"]}`), "br")
	require.Equal(t, http.StatusUnsupportedMediaType, status)
	require.Contains(t, body["error"], `Content-Encoding "br" is not supported`)
	status, _ = post([]byte("\x1f\x8b not gzip"), "gzip")
	require.Equal(t, http.StatusBadRequest, status)

	// Expect: 100-continue with a Content-Length over the limit: 413, and
	// the body is never sent.
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n")
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
}

// The lane a request asks for reaches the queue: "priority" on /embed (it
// wins over the header), X-Priority on /v1/embeddings; anything else is 400.
func TestPriorityChoosesTheLane(t *testing.T) {
	t.Parallel()
	var got atomic.Value
	q := fakeQueue(func(_ context.Context, req dispatch.Request) (dispatch.Result, error) {
		got.Store(req.Lane)
		out := make([][]float32, len(req.Documents))
		for i := range out {
			out[i] = []float32{1, 0}
		}
		return dispatch.Result{Vectors: out}, nil
	})
	srv := httptest.NewServer(New(q, fixedReadiness{n: 1}, Options{Model: "m", Dims: 2, Limits: testLimits, RequestTimeout: time.Second}, zap.NewNop()))
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		name, path, header, body string
		status                   int
		lane                     wire.Lane
	}{
		{"EmbedDefault", "/embed", "", `{"documents":["a"]}`, 200, wire.LaneInteractive},
		{"EmbedField", "/embed", "", `{"documents":["a"],"priority":"bulk"}`, 200, wire.LaneBulk},
		{"EmbedHeader", "/embed", "bulk", `{"documents":["a"]}`, 200, wire.LaneBulk},
		{"EmbedFieldWins", "/embed", "bulk", `{"documents":["a"],"priority":"interactive"}`, 200, wire.LaneInteractive},
		{"EmbedUnknown", "/embed", "", `{"documents":["a"],"priority":"urgent"}`, 400, ""},
		{"EmbedNotString", "/embed", "", `{"documents":["a"],"priority":1}`, 400, ""},
		{"OpenAIDefault", "/v1/embeddings", "", `{"input":"a"}`, 200, wire.LaneInteractive},
		{"OpenAIHeader", "/v1/embeddings", "Bulk", `{"input":"a"}`, 200, wire.LaneBulk},
		{"OpenAIUnknown", "/v1/embeddings", "high", `{"input":"a"}`, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got.Store(wire.Lane(""))
			req, err := http.NewRequest(http.MethodPost, srv.URL+tc.path, strings.NewReader(tc.body))
			require.NoError(t, err)
			if tc.header != "" {
				req.Header.Set("X-Priority", tc.header)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.Equal(t, tc.status, resp.StatusCode, "%s", body)
			require.Equal(t, tc.lane, got.Load())
			if tc.status == 400 {
				require.Contains(t, string(body), "priority")
			}
		})
	}
}
