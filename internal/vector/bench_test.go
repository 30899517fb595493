package vector

import (
	"math/rand/v2"
	"testing"
)

func randomVectors(n, dims int) [][]float32 {
	r := rand.New(rand.NewPCG(1, 2))
	out := make([][]float32, n)
	for i := range out {
		out[i] = make([]float32, dims)
		for j := range out[i] {
			out[i][j] = float32(r.NormFloat64() * 0.02)
		}
	}
	return out
}

func BenchmarkVectorBlob(b *testing.B) {
	v := randomVectors(1, 4096)[0]
	blob := Append(nil, v)
	b.Run("Encode4096", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		buf := make([]byte, 0, len(blob))
		for b.Loop() {
			buf = Append(buf[:0], v)
		}
	})
	b.Run("Decode4096", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for b.Loop() {
			if _, err := Decode(blob, 4096); err != nil {
				b.Fatal(err)
			}
		}
	})
}
