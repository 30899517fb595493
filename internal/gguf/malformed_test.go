package gguf_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/gguf"
	"github.com/waywo/embed/internal/ollamatest"
)

// spec is a small GGUF built by hand, for breaking one thing at a time.
type spec struct {
	magic     string
	version   uint32
	nTensors  *uint64 // the header's count; nil: len(tensors)
	nKVs      *uint64
	kvs       []kvSpec
	tensors   []tensorSpec
	dataBytes int
}

type kvSpec struct {
	key string
	raw []byte // type tag and value
}

type tensorSpec struct {
	name   string
	dims   []uint64
	typ    uint32
	offset uint64
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
func str(s string) []byte { return append(u64(uint64(len(s))), s...) }

func strKV(k, v string) kvSpec        { return kvSpec{k, append(u32(8), str(v)...)} }
func u32KV(k string, v uint32) kvSpec { return kvSpec{k, append(u32(4), u32(v)...)} }

func validSpec() spec {
	return spec{
		magic: "GGUF", version: 3,
		kvs: []kvSpec{strKV("general.architecture", "llama-embed"), u32KV("llama-embed.embedding_length", 8)},
		tensors: []tensorSpec{
			{"a", []uint64{8}, 0, 0},     // 32 bytes of F32
			{"b", []uint64{8, 2}, 1, 32}, // 32 bytes of F16
		},
		dataBytes: 64,
	}
}

func (s spec) bytes() []byte {
	b := []byte(s.magic)
	b = append(b, u32(s.version)...)
	nt, nk := uint64(len(s.tensors)), uint64(len(s.kvs))
	if s.nTensors != nil {
		nt = *s.nTensors
	}
	if s.nKVs != nil {
		nk = *s.nKVs
	}
	b = append(b, u64(nt)...)
	b = append(b, u64(nk)...)
	for _, kv := range s.kvs {
		b = append(b, str(kv.key)...)
		b = append(b, kv.raw...)
	}
	for _, t := range s.tensors {
		b = append(b, str(t.name)...)
		b = append(b, u32(uint32(len(t.dims)))...)
		for _, d := range t.dims {
			b = append(b, u64(d)...)
		}
		b = append(b, u32(t.typ)...)
		b = append(b, u64(t.offset)...)
	}
	for len(b)%32 != 0 {
		b = append(b, 0)
	}
	return append(b, make([]byte, s.dataBytes)...)
}

func ptr(v uint64) *uint64 { return &v }

func TestMalformedFilesAreRefusedWithTheReason(t *testing.T) {
	t.Parallel()
	good := validSpec().bytes()
	_, err := gguf.Read(bytes.NewReader(good), int64(len(good)))
	require.NoError(t, err, "the base case is valid")

	cases := []struct {
		name   string
		file   func() []byte
		reason string
	}{
		{"empty", func() []byte { return nil }, "too short for a GGUF header"},
		{"wrong magic", func() []byte { s := validSpec(); s.magic = "GGML"; return s.bytes() }, `not a GGUF file: magic "GGML"`},
		{"a safetensors file", func() []byte {
			return append(u64(64), []byte(`{"__metadata__":{}}`+"                                            ")...)
		}, "not a GGUF file"},
		{"version 1", func() []byte { s := validSpec(); s.version = 1; return s.bytes() }, "GGUF version 1 is not supported"},
		{"version 4", func() []byte { s := validSpec(); s.version = 4; return s.bytes() }, "GGUF version 4 is not supported"},
		{"truncated in the counts", func() []byte { return good[:20] }, "too short"},
		{"truncated in the metadata", func() []byte { return good[:30] }, "truncated"},
		{"truncated in a key", func() []byte { return good[:100] }, "truncated or corrupt: key claims 28 bytes"},
		{"truncated in the tensor table", func() []byte { return good[:120] }, "truncated"},
		{"truncated in the data", func() []byte { return good[:len(good)-1] }, `truncated: tensor "b"`},
		{"absurd tensor count", func() []byte { s := validSpec(); s.nTensors = ptr(1 << 60); return s.bytes() }, "tensor count is 1152921504606846976"},
		{"absurd metadata count", func() []byte { s := validSpec(); s.nKVs = ptr(1 << 40); return s.bytes() }, "metadata count is 1099511627776"},
		{"absurd key length", func() []byte {
			s := validSpec()
			b := s.bytes()
			copy(b[24:32], u64(1<<50))
			return b
		}, "key claims 1125899906842624 bytes"},
		{"absurd array length", func() []byte {
			s := validSpec()
			s.kvs = append(s.kvs, kvSpec{"tokenizer.ggml.tokens", append(append(u32(9), u32(8)...), u64(1<<40)...)})
			return s.bytes()
		}, "array length is 1099511627776"},
		{"unknown value type", func() []byte { s := validSpec(); s.kvs = append(s.kvs, kvSpec{"x", u32(13)}); return s.bytes() }, "unknown value type 13"},
		{"bool neither 0 nor 1", func() []byte {
			s := validSpec()
			s.kvs = append(s.kvs, kvSpec{"x", append(u32(7), 2)})
			return s.bytes()
		}, "bool is 2"},
		{"duplicate key", func() []byte {
			s := validSpec()
			s.kvs = append(s.kvs, u32KV("llama-embed.embedding_length", 9))
			return s.bytes()
		}, "appears twice"},
		{"no architecture", func() []byte { s := validSpec(); s.kvs = s.kvs[1:]; return s.bytes() }, "no general.architecture"},
		{"alignment not a power of two", func() []byte {
			s := validSpec()
			s.kvs = append(s.kvs, u32KV("general.alignment", 24))
			return s.bytes()
		}, "power of two"},
		{"tensor offset past the end", func() []byte { s := validSpec(); s.tensors[1].offset = 1 << 40; return s.bytes() }, "ends past the file's 64 data bytes"},
		{"misaligned tensor", func() []byte { s := validSpec(); s.tensors[1].offset = 40; return s.bytes() }, "not a multiple of the alignment 32"},
		{"overlapping tensors", func() []byte { s := validSpec(); s.tensors[1].offset = 0; return s.bytes() }, "overlaps"},
		{"unknown tensor type", func() []byte { s := validSpec(); s.tensors[0].typ = 99; return s.bytes() }, "unknown ggml type 99"},
		{"zero dimension", func() []byte { s := validSpec(); s.tensors[0].dims = []uint64{8, 0}; return s.bytes() }, "zero dimension"},
		{"five dimensions", func() []byte { s := validSpec(); s.tensors[0].dims = []uint64{1, 1, 1, 1, 8}; return s.bytes() }, "5 dimensions"},
		{"overflowing shape", func() []byte { s := validSpec(); s.tensors[0].dims = []uint64{1 << 40, 1 << 40}; return s.bytes() }, "overflows"},
		{"partial quant block", func() []byte {
			s := validSpec()
			s.tensors[0].typ = 8
			s.tensors[0].dims = []uint64{8}
			return s.bytes()
		}, "not a multiple of Q8_0's block of 32"},
		{"duplicate tensor", func() []byte { s := validSpec(); s.tensors[1].name = "a"; return s.bytes() }, `tensor "a" appears twice`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.file()
			_, err := gguf.Read(bytes.NewReader(b), int64(len(b)))
			require.ErrorIs(t, err, gguf.ErrInvalid)
			require.ErrorContains(t, err, c.reason)
			require.NotContains(t, err.Error(), "\n", "one line")
		})
	}
}

// FuzzRead: any bytes either fail with ErrInvalid or parse into a file
// whose rewrite parses again to the same header.
func FuzzRead(f *testing.F) {
	f.Add(validSpec().bytes())
	small := ollamatest.TinyLlamaEmbed{Dims: 32, Blocks: 1, Heads: 2, KVHeads: 1, FF: 32, ContextLength: 64, Vocab: 8, Seed: 2}
	var buf bytes.Buffer
	require.NoError(f, small.WriteGGUF(&buf))
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := gguf.Read(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			require.ErrorIs(t, err, gguf.ErrInvalid)
			return
		}
		var out bytes.Buffer
		_, err = gguf.Rewrite(&out, bytes.NewReader(b), file, []gguf.Set{gguf.Uint32("x.pooling_type", 1)})
		require.NoError(t, err)
		again, err := gguf.Read(bytes.NewReader(out.Bytes()), int64(out.Len()))
		require.NoError(t, err)
		require.Equal(t, file.Tensors, again.Tensors)
		require.Equal(t, file.Architecture(), again.Architecture())
		v, ok := again.Uint("x.pooling_type")
		require.True(t, ok)
		require.Equal(t, uint64(1), v)
	})
}
