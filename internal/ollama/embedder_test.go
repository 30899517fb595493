package ollama

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/ollama/ollama/api"

	"github.com/waywo/embed/internal/engine"
)

// The whole reply, as Ollama writes it, decodes to what encoding/json and
// api.EmbedResponse give.
func TestEmbedReplyDecode(t *testing.T) {
	body := []byte(`{"model":"m","embeddings":[[0.1,-0.2],[3e-5,4]],"total_duration":12,"load_duration":3,"prompt_eval_count":7}`)
	var r api.EmbedResponse
	if err := decodeEmbedReply(body, &r); err != nil {
		t.Fatal(err)
	}
	if r.Model != "m" || r.PromptEvalCount != 7 || r.TotalDuration != 12 || r.LoadDuration != 3 ||
		len(r.Embeddings) != 2 || r.Embeddings[1][0] != float32(3e-5) || r.Embeddings[0][1] != float32(-0.2) {
		t.Fatalf("decoded %+v", r)
	}
	for _, bad := range []string{
		`{"model":"m","embeddings":[[0.1,"x"]]}`, `{"model":1,"embeddings":[]}`, `{"model":"m","embeddings":[]`,
		`{"model":"m","embeddings":[]}x`, `{"model":"m" "embeddings":[]}`, `{"model\x":"m"}`, `{"extra":[1,}`,
		`[]`, ``, `{"prompt_eval_count":"7"}`,
	} {
		var r api.EmbedResponse
		if err := decodeEmbedReply([]byte(bad), &r); err == nil {
			t.Errorf("%s: decoded %+v", bad, r)
		}
	}
	// Names match as encoding/json matches them; unknown members are skipped.
	var r2 api.EmbedResponse
	if err := decodeEmbedReply([]byte(` { "Model" : "m", "extra": {"a":[1,"]"]}, "embe\u0064dings": [[1]] } `), &r2); err != nil ||
		r2.Model != "m" || len(r2.Embeddings) != 1 {
		t.Fatalf("got %+v, %v", r2, err)
	}
}

// The worker's hottest path: Ollama's JSON reply for a batch of 32
// 4096-d vectors, decoded by encoding/json and by vector.DecodeObject side by
// side.
func BenchmarkOllamaReplyDecode(b *testing.B) {
	body, _ := json.Marshal(api.EmbedResponse{Model: "m", Embeddings: gaussianVectors(32, 4096)})
	b.Run("encoding_json", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var r api.EmbedResponse
			if err := json.Unmarshal(body, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("DecodeObject", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var r api.EmbedResponse
			if err := decodeEmbedReply(body, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func gaussianVectors(n, dims int) [][]float32 {
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

// The client runs engine.Computed when Ollama's answer begins with a 2xx
// status — the vectors are computed, only reading them remains — and not
// when it answers an error.
func TestEmbedRunsComputedOnAnAnswer(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if status != http.StatusOK {
			http.Error(w, `{"error":"down"}`, status)
			return
		}
		_, _ = w.Write([]byte(`{"model":"m","embeddings":[[1,2]],"prompt_eval_count":1}`))
	}))
	defer srv.Close()
	base, _ := url.Parse(srv.URL)
	c := NewEmbedClient(base, srv.Client())
	computed := 0
	ctx := engine.WithComputed(context.Background(), func() { computed++ })
	if _, err := c.Embed(ctx, &api.EmbedRequest{Model: "m", Input: []string{"x"}}); err != nil || computed != 1 {
		t.Fatalf("answer: computed %d times, %v", computed, err)
	}
	status = http.StatusInternalServerError
	if _, err := c.Embed(ctx, &api.EmbedRequest{Model: "m", Input: []string{"x"}}); err == nil || computed != 1 {
		t.Fatalf("error: computed %d times, %v", computed, err)
	}
}
