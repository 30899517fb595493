// Package enginesim is a modelled GPU embedding engine for benchmarks: what
// one forward pass of a model costs on a modelled GPU (Cost), and a server
// that spends that time, speaking Ollama's /api/embed as a serial runner
// does (one sequence per pass, as Ollama runs an embedding model) or an
// OpenAI-compatible /v1/embeddings as a batching engine does (the
// sequences of every call in flight packed into passes of up to a token
// budget, as vLLM and llama-server -np N do). It is a model, not a
// measurement: its figures say what the pipeline leaves on the table
// against the modelled ceiling, and a run on the GPU must confirm the
// parameters (docs/benchmarks.md lists what).
package enginesim

import (
	"math"
	"time"
)

// GPU is a modelled accelerator.
type GPU struct {
	Name string
	// FLOPs is the dense bf16 rate a large matrix product achieves, FLOP/s.
	FLOPs float64
	// MemBW is the memory bandwidth, bytes/s: a forward pass reads every
	// weight once, whatever its tokens.
	MemBW float64
}

// Model is a modelled embedding model.
type Model struct {
	Name        string
	Params      float64 // parameters: about 2 x Params FLOP per token
	WeightBytes float64
}

var (
	// H200 and H100 are the same GH100 chip, with the FLOP rate measured
	// on an H200 (790 TFLOP/s bf16, issue 23) for both, and each its own
	// memory (HBM3e 4.8 TB/s, HBM3 3.35 TB/s).
	H200 = GPU{Name: "H200", FLOPs: 790e12, MemBW: 4.8e12}
	H100 = GPU{Name: "H100", FLOPs: 790e12, MemBW: 3.35e12}
	// Nemotron8B is llama-embed-nemotron-8b: 7.5 B parameters, F16.
	Nemotron8B = Model{Name: "llama-embed-nemotron-8b", Params: 7.5e9, WeightBytes: 15e9}
)

// Cost is what a forward pass costs: at least the time to read the
// weights, and at least its FLOPs at a rate that grows with its tokens
// (a pass of t tokens reaches t/(t+HalfTokens) of the GPU's rate: small
// matrix products leave the chip idle), plus a fixed overhead per pass
// (kernel launches, scheduling).
type Cost struct {
	GPU        GPU
	Model      Model
	Overhead   time.Duration // per pass
	HalfTokens int           // tokens at which a pass reaches half the FLOP rate
	PassTokens int           // most tokens the batching engine packs in one pass
}

// Default is nemotron-8b on gpu with the parameters a GPU run must
// confirm: 1 ms a pass, half the FLOP rate at 128 tokens (so that a pass of a short query is bound by the weights, as issue 23 says), 8192 tokens a
// pass (vLLM's default --max-num-batched-tokens for pooling models).
func Default(gpu GPU) Cost {
	return Cost{GPU: gpu, Model: Nemotron8B, Overhead: time.Millisecond, HalfTokens: 128, PassTokens: 8192}
}

// Pass is the time of one forward pass over tokens tokens.
func (c Cost) Pass(tokens int) time.Duration {
	weights := c.Model.WeightBytes / c.GPU.MemBW
	compute := 2 * c.Model.Params * float64(tokens+c.HalfTokens) / c.GPU.FLOPs
	return c.Overhead + time.Duration(math.Max(weights, compute)*float64(time.Second))
}

// Ceiling is the most sequences of perSeq tokens a second one GPU can
// embed: passes as full as the token budget allows.
func (c Cost) Ceiling(perSeq int) float64 {
	n := max(1, c.PassTokens/max(perSeq, 1))
	return float64(n) / c.Pass(n*perSeq).Seconds()
}

// Serial is what a serial runner (one sequence a pass) does with
// sequences of perSeq tokens, per second.
func (c Cost) Serial(perSeq int) float64 { return 1 / c.Pass(perSeq).Seconds() }

// Tokens is how many tokens the modelled tokenizer makes of text: one per
// 4 bytes, and one for the sequence's special token.
func Tokens(text string) int { return (len(text)+3)/4 + 1 }
