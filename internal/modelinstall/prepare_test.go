package modelinstall_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/modelinstall"
	"github.com/waywo/embed/internal/ollamatest"
)

func TestMain(m *testing.M) { ollamatest.RunTests(m) }

func tinyLlamaEmbedFile(t testing.TB, dir string, mutate func(*ollamatest.TinyLlamaEmbed)) (string, []byte) {
	t.Helper()
	m := ollamatest.DefaultTinyLlamaEmbed()
	if mutate != nil {
		mutate(&m)
	}
	var buf bytes.Buffer
	require.NoError(t, m.WriteGGUF(&buf))
	path := filepath.Join(dir, "llama-embed-nemotron-tiny.gguf")
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o444))
	return path, buf.Bytes()
}

func TestPrepareSetsWhatOllamaNeedsAndNothingElse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in, src := tinyLlamaEmbedFile(t, dir, nil)
	out := filepath.Join(dir, "prepared.gguf")
	p, err := modelinstall.PrepareFile(in, out, 64)
	require.NoError(t, err)
	require.Equal(t, "llama-embed", p.Architecture)
	require.Len(t, p.Changes, 2)
	require.Contains(t, p.Changes[0], "set llama-embed.pooling_type = 1 (was absent)")
	require.Contains(t, p.Changes[1], "set llama-embed.attention.causal = false (was absent)")
	now, err := os.ReadFile(in)
	require.NoError(t, err)
	require.True(t, bytes.Equal(src, now), "the source is untouched")
	st, err := os.Stat(out)
	require.NoError(t, err)
	require.Equal(t, p.Size, st.Size())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 2, "no partial file left")

	// Preparing the prepared copy changes nothing.
	again, err := modelinstall.PrepareFile(out, filepath.Join(dir, "again.gguf"), 64)
	require.NoError(t, err)
	require.Empty(t, again.Changes)
	require.Equal(t, p.Digest, again.Digest, "an identical copy")

	// A file that already says pooling 3 (last) and causal true is set right.
	odd, _ := tinyLlamaEmbedFile(t, t.TempDir(), func(m *ollamatest.TinyLlamaEmbed) {
		m.Extra = map[string]any{"llama-embed.pooling_type": uint32(3), "llama-embed.attention.causal": true}
	})
	fixed, err := modelinstall.PrepareFile(odd, filepath.Join(dir, "fixed.gguf"), 64)
	require.NoError(t, err)
	require.Contains(t, fixed.Changes[0], "(was 3)")
	require.Contains(t, fixed.Changes[1], "(was true)")
}

func TestPrepareRefusesBadFilesInOneLine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, good := tinyLlamaEmbedFile(t, t.TempDir(), nil)
	var bert bytes.Buffer
	tb := ollamatest.DefaultTinyBERT()
	tb.Words = tb.Words[:20]
	require.NoError(t, tb.WriteGGUF(&bert))
	var llama bytes.Buffer // a completion model: llama, no pooling
	completion := ollamatest.DefaultTinyLlamaEmbed()
	completion.Arch = "llama"
	require.NoError(t, completion.WriteGGUF(&llama))

	cases := []struct {
		name   string
		file   []byte
		dims   int
		reason string
	}{
		{"truncated", good[:len(good)/2], 64, "invalid GGUF file: truncated"},
		{"truncated header", good[:40], 64, "invalid GGUF file: truncated"},
		{"wrong magic", append([]byte("GGML"), good[4:]...), 64, `not a GGUF file: magic "GGML"`},
		{"not a model at all", []byte("<html>rate limited</html>                   "), 64, "not a GGUF file"},
		{"wrong dimensions", good, 4096, "llama-embed.embedding_length is 64, EMBED_DIMENSIONS is 4096"},
		{"absurd tensor count", append(append([]byte{}, good[:8]...), append(bytes.Repeat([]byte{0xff}, 8), good[16:]...)...), 64, "truncated or corrupt: tensor count"},
		{"absurd metadata count", append(append([]byte{}, good[:16]...), append(bytes.Repeat([]byte{0x7f}, 8), good[24:]...)...), 64, "truncated or corrupt: metadata count"},
		{"wrong architecture: a bert without pooling", bytes.Replace(bert.Bytes(), []byte("bert.pooling_type"), []byte("bert.pooling_typx"), 1), 384, `architecture "bert" has no bert.pooling_type`},
		{"wrong architecture: a completion model", llama.Bytes(), 64, `architecture "llama" has no llama.pooling_type: Ollama would serve it as a completion model`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := filepath.Join(dir, c.name+".gguf")
			require.NoError(t, os.WriteFile(in, c.file, 0o444))
			out := filepath.Join(dir, c.name+".out.gguf")
			_, err := modelinstall.PrepareFile(in, out, c.dims)
			require.Error(t, err)
			require.ErrorContains(t, err, c.reason)
			require.NotContains(t, err.Error(), "\n")
			require.NoFileExists(t, out)
			now, _ := os.ReadFile(in)
			require.True(t, bytes.Equal(c.file, now))
		})
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "*.partial-*"))
	require.Empty(t, matches, "no partial copies left")

	// The source and the copy must differ.
	in, _ := tinyLlamaEmbedFile(t, t.TempDir(), nil)
	_, err := modelinstall.PrepareFile(in, in, 64)
	require.ErrorContains(t, err, "another file than the source")
}
