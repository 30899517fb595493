package ollamatest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"strings"
)

// TinyBERT describes the deterministic bag-of-words model the tests generate.
//
// It is a one-block BERT whose attention-output and feed-forward weights are
// zero, whose position embeddings are zero and whose norms are identities, so
// the model's sentence vector is the L2-normalised mean of the per-token
// vectors. Each vocabulary entry gets a pseudo-random vector seeded by its own
// text, which makes texts that share words come out close and unrelated texts
// far apart: tests can assert meaning, not only shape.
type TinyBERT struct {
	Dims          int // embedding length
	ContextLength int // tokens; longer inputs are truncated or refused by Ollama
	Words         []string
}

// DefaultTinyBERT is the model every integration test uses.
func DefaultTinyBERT() TinyBERT {
	return TinyBERT{Dims: 384, ContextLength: 512, Words: vocabularyWords()}
}

const (
	ggufTypeUint32  = 4
	ggufTypeInt32   = 5
	ggufTypeFloat32 = 6
	ggufTypeBool    = 7
	ggufTypeString  = 8
	ggufTypeArray   = 9

	ggmlTypeF32   = 0
	ggmlTypeF16   = 1
	ggufAlignment = 32

	tokenNormal  = 1
	tokenControl = 3

	idPad  = 0
	idUnk  = 100
	idCLS  = 101
	idSEP  = 102
	idMask = 103
)

// Vocabulary returns the token list: BERT's special ids at their usual
// places, every letter, digit and ASCII punctuation mark both word-initial
// (prefixed with U+2581) and as a continuation piece, then the whole words.
// Any lowercase ASCII text therefore tokenises without [UNK].
func (m TinyBERT) Vocabulary() (tokens []string, types []int32) {
	add := func(tok string, typ int32) {
		tokens = append(tokens, tok)
		types = append(types, typ)
	}
	for i := 0; i < idMask+1; i++ {
		switch i {
		case idPad:
			add("[PAD]", tokenControl)
		case idUnk:
			add("[UNK]", tokenControl)
		case idCLS:
			add("[CLS]", tokenControl)
		case idSEP:
			add("[SEP]", tokenControl)
		case idMask:
			add("[MASK]", tokenControl)
		default:
			add(fmt.Sprintf("[unused%d]", i), tokenControl)
		}
	}
	seen := map[string]bool{}
	for _, t := range tokens {
		seen[t] = true
	}
	addOnce := func(tok string) {
		if !seen[tok] {
			seen[tok] = true
			add(tok, tokenNormal)
		}
	}
	for c := byte(33); c < 127; c++ {
		if c >= 'A' && c <= 'Z' {
			continue
		}
		addOnce("\u2581" + string(c))
		addOnce(string(c))
	}
	for _, w := range m.Words {
		addOnce("\u2581" + strings.ToLower(w))
	}
	return tokens, types
}

// TokenVector is the embedding row of one vocabulary entry: deterministic in
// the token's text, zero for [PAD].
func (m TinyBERT) TokenVector(token string) []float32 {
	v := make([]float32, m.Dims)
	if token == "[PAD]" {
		return v
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(token))
	r := rand.New(rand.NewPCG(h.Sum64(), 0x9e3779b97f4a7c15))
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

type ggufWriter struct {
	w   *bufio.Writer
	n   uint64 // bytes written so far, for alignment padding
	kvs uint64 // key-value pairs written
	err error
}

func (g *ggufWriter) Write(p []byte) (int, error) {
	n, err := g.w.Write(p)
	g.n += uint64(n)
	return n, err
}

func (g *ggufWriter) put(v any) {
	if g.err == nil {
		g.err = binary.Write(g, binary.LittleEndian, v)
	}
}

func (g *ggufWriter) str(s string) {
	g.put(uint64(len(s)))
	if g.err == nil {
		_, g.err = g.Write([]byte(s))
	}
}

func (g *ggufWriter) key(k string, typ uint32)  { g.kvs++; g.str(k); g.put(typ) }
func (g *ggufWriter) kvU32(k string, v uint32)  { g.key(k, ggufTypeUint32); g.put(v) }
func (g *ggufWriter) kvF32(k string, v float32) { g.key(k, ggufTypeFloat32); g.put(v) }
func (g *ggufWriter) kvBool(k string, v bool)   { g.key(k, ggufTypeBool); g.put(v) }
func (g *ggufWriter) kvStr(k, v string)         { g.key(k, ggufTypeString); g.str(v) }

func (g *ggufWriter) kvStrings(k string, vs []string) {
	g.key(k, ggufTypeArray)
	g.put(uint32(ggufTypeString))
	g.put(uint64(len(vs)))
	for _, v := range vs {
		g.str(v)
	}
}

func (g *ggufWriter) kvInt32s(k string, vs []int32) {
	g.key(k, ggufTypeArray)
	g.put(uint32(ggufTypeInt32))
	g.put(uint64(len(vs)))
	g.put(vs)
}

type tensor struct {
	name  string
	shape []uint64 // ggml order: fastest dimension first
	fill  func(dst []float32)
	f16   bool // stored as F16 (random bits from fill's values)
}

func (t tensor) bytes() uint64 {
	if t.f16 {
		return t.elems() * 2
	}
	return t.elems() * 4
}

func (t tensor) elems() uint64 {
	n := uint64(1)
	for _, d := range t.shape {
		n *= d
	}
	return n
}

// WriteGGUF writes the model as a GGUF v3 file with F32 tensors.
func (m TinyBERT) WriteGGUF(out io.Writer) error {
	tokens, types := m.Vocabulary()
	d, ctx, ff := uint64(m.Dims), uint64(m.ContextLength), uint64(16)
	zeros := func([]float32) {}
	ones := func(dst []float32) {
		for i := range dst {
			dst[i] = 1
		}
	}
	tensors := []tensor{
		{"token_embd.weight", []uint64{d, uint64(len(tokens))}, func(dst []float32) {
			for i, tok := range tokens {
				copy(dst[i*m.Dims:], m.TokenVector(tok))
			}
		}, false},
		{"token_types.weight", []uint64{d, 2}, zeros, false},
		{"position_embd.weight", []uint64{d, ctx}, zeros, false},
		{"token_embd_norm.weight", []uint64{d}, ones, false},
		{"token_embd_norm.bias", []uint64{d}, zeros, false},
	}
	blk := func(name string, shape []uint64, fill func([]float32)) {
		tensors = append(tensors, tensor{"blk.0." + name, shape, fill, false})
	}
	for _, p := range []string{"attn_q", "attn_k", "attn_v", "attn_output"} {
		blk(p+".weight", []uint64{d, d}, zeros)
		blk(p+".bias", []uint64{d}, zeros)
	}
	blk("attn_output_norm.weight", []uint64{d}, ones)
	blk("attn_output_norm.bias", []uint64{d}, zeros)
	blk("ffn_up.weight", []uint64{d, ff}, zeros)
	blk("ffn_up.bias", []uint64{ff}, zeros)
	blk("ffn_down.weight", []uint64{ff, d}, zeros)
	blk("ffn_down.bias", []uint64{d}, zeros)
	blk("layer_output_norm.weight", []uint64{d}, ones)
	blk("layer_output_norm.bias", []uint64{d}, zeros)

	// The header counts the key-value pairs before listing them, so write
	// them to a buffer first.
	var kvBuf bytes.Buffer
	g := &ggufWriter{w: bufio.NewWriter(&kvBuf)}

	g.kvStr("general.architecture", "bert")
	g.kvStr("general.name", "waywo-tiny-bert")
	g.kvU32("general.alignment", ggufAlignment)
	g.kvU32("bert.context_length", uint32(ctx))
	g.kvU32("bert.embedding_length", uint32(d))
	g.kvU32("bert.feed_forward_length", uint32(ff))
	g.kvU32("bert.block_count", 1)
	g.kvU32("bert.attention.head_count", 1)
	g.kvF32("bert.attention.layer_norm_epsilon", 1e-12)
	g.kvBool("bert.attention.causal", false)
	g.kvU32("bert.pooling_type", 1)
	g.kvStr("tokenizer.ggml.model", "bert")
	g.kvStrings("tokenizer.ggml.tokens", tokens)
	g.kvInt32s("tokenizer.ggml.token_type", types)
	g.kvU32("tokenizer.ggml.token_type_count", 2)
	g.kvU32("tokenizer.ggml.bos_token_id", idCLS)
	g.kvU32("tokenizer.ggml.eos_token_id", idSEP)
	g.kvU32("tokenizer.ggml.unknown_token_id", idUnk)
	g.kvU32("tokenizer.ggml.seperator_token_id", idSEP)
	g.kvU32("tokenizer.ggml.padding_token_id", idPad)
	g.kvU32("tokenizer.ggml.cls_token_id", idCLS)
	g.kvU32("tokenizer.ggml.mask_token_id", idMask)
	if err := g.w.Flush(); err != nil || g.err != nil {
		return errors.Join(err, g.err)
	}
	return writeFile(out, kvBuf.Bytes(), g.kvs, tensors)
}

// writeFile writes a GGUF v3 file: header, the encoded key-value pairs,
// the tensor table, then each tensor's data, 32-byte aligned.
func writeFile(out io.Writer, kvs []byte, nkv uint64, tensors []tensor) error {
	g := &ggufWriter{w: bufio.NewWriterSize(out, 1<<20)}
	g.put([]byte("GGUF"))
	g.put(uint32(3))
	g.put(uint64(len(tensors)))
	g.put(nkv)
	_, g.err = g.Write(kvs)

	offset := uint64(0)
	for _, t := range tensors {
		g.str(t.name)
		g.put(uint32(len(t.shape)))
		g.put(t.shape)
		if t.f16 {
			g.put(uint32(ggmlTypeF16))
		} else {
			g.put(uint32(ggmlTypeF32))
		}
		g.put(offset)
		offset += align(t.bytes())
	}
	g.pad()
	for _, t := range tensors {
		buf := make([]float32, t.elems())
		t.fill(buf)
		if t.f16 {
			half := make([]uint16, len(buf))
			for i, f := range buf {
				half[i] = uint16(math.Float32bits(f) >> 16) // any bits do: nothing computes with them
			}
			g.put(half)
		} else {
			g.put(buf)
		}
		g.pad()
	}
	if g.err != nil {
		return g.err
	}
	return g.w.Flush()
}

func (g *ggufWriter) pad() {
	if rem := g.n % ggufAlignment; rem != 0 {
		g.put(make([]byte, ggufAlignment-rem))
	}
}

func align(n uint64) uint64 { return (n + ggufAlignment - 1) / ggufAlignment * ggufAlignment }
