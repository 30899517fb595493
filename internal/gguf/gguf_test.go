package gguf_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ollama/ollama/fs/ggml"
	ollamagguf "github.com/ollama/ollama/fs/gguf"
	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/gguf"
	"github.com/waywo/embed/internal/ollamatest"
)

func tinyLlamaEmbed(t testing.TB, m ollamatest.TinyLlamaEmbed) []byte {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, m.WriteGGUF(&buf))
	return buf.Bytes()
}

func read(t testing.TB, b []byte) *gguf.File {
	t.Helper()
	f, err := gguf.Read(bytes.NewReader(b), int64(len(b)))
	require.NoError(t, err)
	return f
}

func TestReadsTheConvertersLlamaEmbedLayout(t *testing.T) {
	t.Parallel()
	m := ollamatest.DefaultTinyLlamaEmbed()
	f := read(t, tinyLlamaEmbed(t, m))
	require.Equal(t, uint32(3), f.Version)
	require.Equal(t, "llama-embed", f.Architecture())
	n, ok := f.Uint("llama-embed.embedding_length")
	require.True(t, ok)
	require.Equal(t, uint64(64), n)
	_, ok = f.Lookup("llama-embed.pooling_type")
	require.False(t, ok, "the converter writes no pooling type")
	require.Equal(t, uint64(32), f.Alignment, "GGUF's default alignment")
	require.Len(t, f.Tensors, 2+9*m.Blocks+1)
	require.Equal(t, "rope_freqs.weight", f.Tensors[1].Name)
	tokens, ok := f.Lookup("tokenizer.ggml.tokens")
	require.True(t, ok)
	require.Equal(t, gguf.Array{Type: gguf.TypeString, Len: uint64(m.Vocab)}, tokens.Value)
	require.Zero(t, f.DataOffset%32)
}

// Rewriting with nothing to set reproduces the file byte for byte: the
// header is re-encoded from what was read, the data copied.
func TestRewriteWithNothingToSetIsTheSameFile(t *testing.T) {
	t.Parallel()
	for _, b := range [][]byte{tinyLlamaEmbed(t, ollamatest.DefaultTinyLlamaEmbed()), tinyBERT(t)} {
		var out bytes.Buffer
		n, err := gguf.Rewrite(&out, bytes.NewReader(b), read(t, b), nil)
		require.NoError(t, err)
		require.Equal(t, int64(len(b)), n)
		require.True(t, bytes.Equal(b, out.Bytes()), "rewritten file differs")
	}
}

func tinyBERT(t testing.TB) []byte {
	m := ollamatest.DefaultTinyBERT()
	m.Words = m.Words[:50]
	var buf bytes.Buffer
	require.NoError(t, m.WriteGGUF(&buf))
	return buf.Bytes()
}

// What Ollama's own reader (fs/ggml, the one its server consults) sees in
// the rewritten file: exactly the keys its embedding gate reads, every
// other key unchanged, every tensor's bytes identical.
func TestRewriteIsWhatOllamasReaderSees(t *testing.T) {
	t.Parallel()
	src := tinyLlamaEmbed(t, ollamatest.DefaultTinyLlamaEmbed())
	f := read(t, src)
	var out bytes.Buffer
	_, err := gguf.Rewrite(&out, bytes.NewReader(src), f, []gguf.Set{
		gguf.Uint32("llama-embed.pooling_type", 1),
		gguf.Bool("llama-embed.attention.causal", false),
	})
	require.NoError(t, err)

	before, err := ggml.Decode(bytes.NewReader(src), -1)
	require.NoError(t, err)
	after, err := ggml.Decode(bytes.NewReader(out.Bytes()), -1)
	require.NoError(t, err)

	kv := after.KV()
	arch := kv.Architecture()
	require.Equal(t, "llama-embed", arch)
	// llm/llama_server.go: _, isEmbedding := f.KV()[fmt.Sprintf("%s.pooling_type", arch)]
	_, isEmbedding := kv[fmt.Sprintf("%s.pooling_type", arch)]
	require.True(t, isEmbedding, "Ollama passes --embedding only with this key")
	_, wasEmbedding := before.KV()[fmt.Sprintf("%s.pooling_type", arch)]
	require.False(t, wasEmbedding)
	// server/images.go reads the file with fs/gguf: f.KeyValue("pooling_type").Valid()
	// gives the embedding capability.
	path := filepath.Join(t.TempDir(), "prepared.gguf")
	require.NoError(t, os.WriteFile(path, out.Bytes(), 0o644))
	gf, err := ollamagguf.Open(path)
	require.NoError(t, err)
	require.True(t, gf.KeyValue("pooling_type").Valid())
	require.NoError(t, gf.Close())
	require.Equal(t, uint32(1), kv.Uint("pooling_type"))
	require.False(t, kv.Bool("attention.causal", true), "llama.cpp reads it as bidirectional")
	require.Equal(t, before.KV().Len()+2, kv.Len())
	for k := range before.KV().Keys() {
		require.Equal(t, before.KV().Value(k), kv.Value(k), k)
	}

	// Tensors: same names, shapes, types, and bytes.
	bt, at := before.Tensors(), after.Tensors()
	require.Len(t, at.Items(), len(bt.Items()))
	require.Zero(t, at.Offset%32, "data section aligned")
	for i, b := range bt.Items() {
		a := at.Items()[i]
		require.Equal(t, b.Name, a.Name)
		require.Equal(t, b.Shape, a.Shape)
		require.Equal(t, b.Kind, a.Kind)
		require.Equal(t, b.Offset, a.Offset)
		old := src[bt.Offset+b.Offset : bt.Offset+b.Offset+b.Size()]
		now := out.Bytes()[at.Offset+a.Offset : at.Offset+a.Offset+a.Size()]
		require.True(t, bytes.Equal(old, now), "tensor %s differs", a.Name)
	}
	require.Equal(t, len(src)-int(bt.Offset), out.Len()-int(at.Offset), "the data section is copied whole")
}

// A key already present keeps its place and takes the new value.
func TestRewriteReplacesAKeyInPlace(t *testing.T) {
	t.Parallel()
	m := ollamatest.DefaultTinyLlamaEmbed()
	m.Extra = map[string]any{"llama-embed.pooling_type": uint32(3), "llama-embed.attention.causal": true}
	src := tinyLlamaEmbed(t, m)
	f := read(t, src)
	var out bytes.Buffer
	_, err := gguf.Rewrite(&out, bytes.NewReader(src), f, []gguf.Set{gguf.Uint32("llama-embed.pooling_type", 1), gguf.Bool("llama-embed.attention.causal", false)})
	require.NoError(t, err)
	g := read(t, out.Bytes())
	require.Len(t, g.KVs, len(f.KVs))
	for i := range f.KVs {
		require.Equal(t, f.KVs[i].Key, g.KVs[i].Key)
	}
	v, _ := g.Uint("llama-embed.pooling_type")
	require.Equal(t, uint64(1), v)
	c, ok := g.Bool("llama-embed.attention.causal")
	require.True(t, ok)
	require.False(t, c)
}

// The rewrite streams: a file on disk goes through without being read
// whole, and the source is left as it was.
func TestRewriteLeavesTheSourceUntouched(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := tinyLlamaEmbed(t, ollamatest.DefaultTinyLlamaEmbed())
	path := filepath.Join(dir, "in.gguf")
	require.NoError(t, os.WriteFile(path, src, 0o444))
	in, err := os.Open(path)
	require.NoError(t, err)
	defer in.Close()
	f, err := gguf.Read(in, int64(len(src)))
	require.NoError(t, err)
	out, err := os.Create(filepath.Join(dir, "out.gguf"))
	require.NoError(t, err)
	defer out.Close()
	_, err = gguf.Rewrite(out, in, f, []gguf.Set{gguf.Uint32("llama-embed.pooling_type", 1)})
	require.NoError(t, err)
	now, err := os.ReadFile(path)
	require.NoError(t, err)
	require.True(t, bytes.Equal(src, now))
}
