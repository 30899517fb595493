package modelinstall_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/modelinstall"
)

// hub serves one file the way Hugging Face does: /resolve/ answers a
// redirect carrying the file's SHA-256 in X-Linked-Etag, the CDN serves
// the bytes with Range support. It can cut the first transfers short.
type hub struct {
	srv     *httptest.Server
	content []byte
	stated  string // what X-Linked-Etag says

	mu     sync.Mutex
	cuts   int      // transfers still to cut short
	ranges []string // Range header of every CDN request
}

func newHub(t *testing.T, size int) *hub {
	h := &hub{content: make([]byte, size)}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range h.content {
		h.content[i] = byte(r.Uint32())
	}
	sum := sha256.Sum256(h.content)
	h.stated = hex.EncodeToString(sum[:])
	mux := http.NewServeMux()
	mux.HandleFunc("/org/repo/resolve/main/model.gguf", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Linked-Etag", `"`+h.stated+`"`)
		http.Redirect(w, r, "/cdn/model.gguf", http.StatusFound)
	})
	mux.HandleFunc("/cdn/model.gguf", func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.ranges = append(h.ranges, r.Header.Get("Range"))
		cut := h.cuts > 0
		h.cuts--
		h.mu.Unlock()
		w.Header().Set("Etag", `"not-a-sha"`)
		if !cut {
			http.ServeContent(w, r, "model.gguf", time.Time{}, bytes.NewReader(h.content))
			return
		}
		cw := &cutWriter{ResponseWriter: w, left: size / 3}
		http.ServeContent(cw, r, "model.gguf", time.Time{}, bytes.NewReader(h.content))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection drops mid-body
	})
	mux.HandleFunc("/missing.gguf", http.NotFound)
	h.srv = httptest.NewTLSServer(mux)
	t.Cleanup(h.srv.Close)
	return h
}

type cutWriter struct {
	http.ResponseWriter
	left int
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errors.New("cut")
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.ResponseWriter.Write(p)
	c.left -= n
	return n, err
}

func (h *hub) url(path string) string { return h.srv.URL + path }

func (h *hub) seen() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.ranges...)
}

func TestDownloadResumesAndChecksTheStatedChecksum(t *testing.T) {
	t.Parallel()
	h := newHub(t, 3<<20)
	h.cuts = 1
	dir := t.TempDir()
	var progress bytes.Buffer
	path, err := modelinstall.Download(context.Background(), h.srv.Client(), h.url("/org/repo/resolve/main/model.gguf"), dir, "", &progress, zap.NewNop())
	require.NoError(t, err)
	require.Equal(t, filepath.Join(dir, "model.gguf"), path)
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.True(t, bytes.Equal(h.content, got))
	ranges := h.seen()
	require.Len(t, ranges, 2)
	require.Empty(t, ranges[0])
	require.Equal(t, "bytes=1048576-", ranges[1], "the second transfer resumes where the first stopped")
	require.NoFileExists(t, path+".part")
	require.Contains(t, progress.String(), "download model.gguf")

	// A complete earlier download is reused, verified, with no request.
	path2, err := modelinstall.Download(context.Background(), h.srv.Client(), h.url("/org/repo/resolve/main/model.gguf"), dir, h.stated, io.Discard, zap.NewNop())
	require.NoError(t, err)
	require.Equal(t, path, path2)
	require.Len(t, h.seen(), 2)
}

func TestDownloadRefusesAChecksumMismatch(t *testing.T) {
	t.Parallel()
	h := newHub(t, 64<<10)
	dir := t.TempDir()
	want := strings.Repeat("ab", 32)
	_, err := modelinstall.Download(context.Background(), h.srv.Client(), h.url("/org/repo/resolve/main/model.gguf"), dir, want, io.Discard, zap.NewNop())
	require.ErrorIs(t, err, modelinstall.ErrChecksum)
	require.ErrorContains(t, err, "want sha256:"+want)
	entries, _ := os.ReadDir(dir)
	require.Empty(t, entries, "the bad file is removed")

	// The server's own statement is checked too.
	h.stated = strings.Repeat("cd", 32)
	_, err = modelinstall.Download(context.Background(), h.srv.Client(), h.url("/org/repo/resolve/main/model.gguf"), dir, "", io.Discard, zap.NewNop())
	require.ErrorIs(t, err, modelinstall.ErrChecksum)
}

func TestDownloadRefusesWhatItCannotUse(t *testing.T) {
	t.Parallel()
	h := newHub(t, 1024)
	dir := t.TempDir()
	_, err := modelinstall.Download(context.Background(), h.srv.Client(), strings.Replace(h.url("/missing.gguf"), "https:", "http:", 1), dir, "", io.Discard, zap.NewNop())
	require.ErrorContains(t, err, "want a local GGUF path or an https URL")
	_, err = modelinstall.Download(context.Background(), h.srv.Client(), h.url("/missing.gguf"), dir, "", io.Discard, zap.NewNop())
	require.ErrorContains(t, err, "404")
	_, err = modelinstall.Download(context.Background(), h.srv.Client(), h.url("/org/repo/resolve/main/model.gguf"), dir, "xyz", io.Discard, zap.NewNop())
	require.ErrorContains(t, err, "not a hex SHA-256")
}
