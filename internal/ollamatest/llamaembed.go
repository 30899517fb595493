package ollamatest

import (
	"bufio"
	"bytes"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
)

// TinyLlamaEmbed is a random-weight GGUF in the layout llama.cpp's
// converter writes for llama-embed-nemotron-8b (LlamaBidirectionalModel):
// architecture "llama-embed", llama's keys under that prefix, a rope_freqs
// tensor, a gpt2/llama-bpe tokenizer, and — as the converter leaves them —
// no llama-embed.pooling_type and no llama-embed.attention.causal. It is
// for testing what reads and rewrites the metadata; Ollama v0.10.1 stores
// it but cannot load it.
type TinyLlamaEmbed struct {
	Dims, Blocks, Heads, KVHeads, FF, ContextLength, Vocab int
	// Arch is general.architecture: "llama-embed" when empty; "llama"
	// makes the same file a completion model's.
	Arch string
	// Extra keys, written after the converter's (a u32, bool or string
	// each): a test can give the file a pooling type or a causal flag.
	Extra map[string]any
	Seed  uint64
}

// DefaultTinyLlamaEmbed is a 2-block model of width 64.
func DefaultTinyLlamaEmbed() TinyLlamaEmbed {
	return TinyLlamaEmbed{Dims: 64, Blocks: 2, Heads: 4, KVHeads: 2, FF: 128, ContextLength: 512, Vocab: 300, Seed: 1}
}

// WriteGGUF writes the model: F32 norms, embeddings and attention, F16
// feed-forward weights, so the data section holds more than one type.
func (m TinyLlamaEmbed) WriteGGUF(out io.Writer) error {
	arch := m.Arch
	if arch == "" {
		arch = "llama-embed"
	}
	d, ff, headDim := uint64(m.Dims), uint64(m.FF), uint64(m.Dims/m.Heads)
	kvd := headDim * uint64(m.KVHeads)
	tokens := make([]string, m.Vocab)
	types := make([]int32, m.Vocab)
	for i := range tokens {
		tokens[i], types[i] = fmt.Sprintf("tok%d", i), tokenNormal
	}
	tokens[0], tokens[1], types[0], types[1] = "<|begin_of_text|>", "<|end_of_text|>", tokenControl, tokenControl
	merges := []string{"t o", "to k", "tok 1", "tok 2"}

	var kvBuf bytes.Buffer
	g := &ggufWriter{w: bufio.NewWriter(&kvBuf)}
	g.kvStr("general.architecture", arch)
	g.kvStr("general.name", "waywo-tiny-llama-embed")
	g.kvU32("general.file_type", 1) // mostly F16, as the converter's --outtype f16
	g.kvU32(arch+".context_length", uint32(m.ContextLength))
	g.kvU32(arch+".embedding_length", uint32(d))
	g.kvU32(arch+".block_count", uint32(m.Blocks))
	g.kvU32(arch+".feed_forward_length", uint32(ff))
	g.kvU32(arch+".attention.head_count", uint32(m.Heads))
	g.kvU32(arch+".attention.head_count_kv", uint32(m.KVHeads))
	g.kvF32(arch+".attention.layer_norm_rms_epsilon", 1e-5)
	g.kvF32(arch+".rope.freq_base", 500000)
	g.kvU32(arch+".rope.dimension_count", uint32(headDim))
	g.kvU32(arch+".vocab_size", uint32(m.Vocab))
	g.kvStr("tokenizer.ggml.model", "gpt2")
	g.kvStr("tokenizer.ggml.pre", "llama-bpe")
	g.kvStrings("tokenizer.ggml.tokens", tokens)
	g.kvInt32s("tokenizer.ggml.token_type", types)
	g.kvStrings("tokenizer.ggml.merges", merges)
	g.kvU32("tokenizer.ggml.bos_token_id", 0)
	g.kvU32("tokenizer.ggml.eos_token_id", 1)
	for _, k := range sortedKeys(m.Extra) {
		switch v := m.Extra[k].(type) {
		case uint32:
			g.kvU32(k, v)
		case bool:
			g.kvBool(k, v)
		case string:
			g.kvStr(k, v)
		default:
			return fmt.Errorf("extra key %s: unsupported type %T", k, v)
		}
	}
	if err := g.w.Flush(); err != nil || g.err != nil {
		return fmt.Errorf("writing metadata: %w %w", err, g.err)
	}

	random := func(name string) func([]float32) {
		h := fnv.New64a()
		_, _ = h.Write([]byte(name))
		r := rand.New(rand.NewPCG(h.Sum64(), m.Seed))
		return func(dst []float32) {
			for i := range dst {
				dst[i] = float32(r.NormFloat64() * 0.02)
			}
		}
	}
	add := func(ts []tensor, name string, shape []uint64, f16 bool) []tensor {
		return append(ts, tensor{name, shape, random(name), f16})
	}
	var ts []tensor
	ts = add(ts, "token_embd.weight", []uint64{d, uint64(m.Vocab)}, false)
	ts = add(ts, "rope_freqs.weight", []uint64{headDim / 2}, false)
	for b := 0; b < m.Blocks; b++ {
		p := fmt.Sprintf("blk.%d.", b)
		ts = add(ts, p+"attn_norm.weight", []uint64{d}, false)
		ts = add(ts, p+"attn_q.weight", []uint64{d, d}, false)
		ts = add(ts, p+"attn_k.weight", []uint64{d, kvd}, false)
		ts = add(ts, p+"attn_v.weight", []uint64{d, kvd}, false)
		ts = add(ts, p+"attn_output.weight", []uint64{d, d}, false)
		ts = add(ts, p+"ffn_norm.weight", []uint64{d}, false)
		ts = add(ts, p+"ffn_gate.weight", []uint64{d, ff}, true)
		ts = add(ts, p+"ffn_up.weight", []uint64{d, ff}, true)
		ts = add(ts, p+"ffn_down.weight", []uint64{ff, d}, true)
	}
	ts = add(ts, "output_norm.weight", []uint64{d}, false)
	return writeFile(out, kvBuf.Bytes(), g.kvs, ts)
}

func sortedKeys(m map[string]any) []string {
	return slices.Sorted(maps.Keys(m))
}
