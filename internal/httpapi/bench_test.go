package httpapi

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// JSON encoding of a 32 x 4096 /embed answer: the fast path against
// encoding/json's reflection, side by side.
func BenchmarkEncodeEmbeddings(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	vecs := make([][]float32, 32)
	for i := range vecs {
		vecs[i] = make([]float32, 4096)
		for j := range vecs[i] {
			vecs[i][j] = float32(r.NormFloat64() * 0.02)
		}
	}
	b.Run("AppendEmbeddings", func(b *testing.B) {
		buf := make([]byte, 0, 2<<20)
		for b.Loop() {
			buf = AppendEmbeddings(buf[:0], vecs)
		}
		b.SetBytes(int64(len(buf)))
	})
	b.Run("encoding_json", func(b *testing.B) {
		var n int
		for b.Loop() {
			out, err := json.Marshal(map[string][][]float32{"embeddings": vecs})
			if err != nil {
				b.Fatal(err)
			}
			n = len(out)
		}
		b.SetBytes(int64(n))
	})
}
