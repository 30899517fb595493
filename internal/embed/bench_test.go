package embed

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/ollama/ollama/api"
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
	blob := AppendVector(nil, v)
	b.Run("Encode4096", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		buf := make([]byte, 0, len(blob))
		for b.Loop() {
			buf = AppendVector(buf[:0], v)
		}
	})
	b.Run("Decode4096", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for b.Loop() {
			if _, err := DecodeVector(blob, 4096); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// The worker's hottest path: Ollama's JSON reply for a batch of 32
// 4096-d vectors, decoded by encoding/json and by DecodeVectorObject side by
// side.
func BenchmarkOllamaReplyDecode(b *testing.B) {
	body, _ := json.Marshal(api.EmbedResponse{Model: "m", Embeddings: randomVectors(32, 4096)})
	b.Run("encoding_json", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var r api.EmbedResponse
			if err := json.Unmarshal(body, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("DecodeVectorObject", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var r api.EmbedResponse
			if err := decodeEmbedReply(body, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
