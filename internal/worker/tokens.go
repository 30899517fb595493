// Token estimates: what a job weighs against EMBED_BATCH_TOKENS before the
// model has seen it.

package worker

import (
	"math"
	"sync/atomic"

	"github.com/waywo/embed/internal/prompt"
	"github.com/waywo/embed/internal/wire"
)

// startTokensPerByte is the estimate before any server reported tokens:
// a BPE tokenizer takes about 4 bytes of English per token.
const startTokensPerByte = 0.25

// tokenRate estimates a job's tokens from its bytes, at the ratio the
// model servers report (prompt tokens over the bytes of the inputs of a
// call), as a moving average.
type tokenRate struct {
	bits atomic.Uint64 // float64 tokens per byte
}

func newTokenRate() *tokenRate {
	t := &tokenRate{}
	t.bits.Store(math.Float64bits(startTokensPerByte))
	return t
}

func (t *tokenRate) perByte() float64 { return math.Float64frombits(t.bits.Load()) }

// estimate is about how many tokens job's documents take as the model's
// inputs (queries with their instruction), one more per document for its
// special tokens.
func (t *tokenRate) estimate(job wire.Job, queryTask string) int {
	extra := 0
	if job.InputType == wire.InputQuery {
		extra = len(prompt.Query(queryTask, ""))
	}
	bytes := 0
	for _, d := range job.Documents {
		bytes += len(d) + extra
	}
	return int(math.Ceil(float64(bytes)*t.perByte())) + len(job.Documents)
}

// learn takes in a call's reported tokens for inputs of bytes bytes.
func (t *tokenRate) learn(tokens, bytes int) {
	if tokens <= 0 || bytes <= 0 {
		return
	}
	seen := float64(tokens) / float64(bytes)
	for {
		old := t.bits.Load()
		next := 0.8*math.Float64frombits(old) + 0.2*seen
		if t.bits.CompareAndSwap(old, math.Float64bits(next)) {
			return
		}
	}
}
