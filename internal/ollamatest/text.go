package ollamatest

import (
	"math"
	"math/rand/v2"
	"strings"
)

// Sentence is a deterministic project-like text of n vocabulary words.
func Sentence(seed uint64, n int) string {
	ws := vocabularyWords()
	r := rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))
	out := make([]string, n)
	for i := range out {
		out[i] = ws[r.IntN(len(ws))]
	}
	return strings.Join(out, " ")
}

// Cosine is the cosine similarity of two vectors.
func Cosine(a, b []float32) float64 {
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	return dot / math.Sqrt(na*nb)
}
