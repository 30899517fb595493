package ollama

import (
	"testing"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/types/model"
	"github.com/stretchr/testify/require"
)

// The verdict from /api/show alone, for the cases a real Ollama here cannot
// produce (a release too old to list capabilities, a served model with the
// keys set wrong).
func TestCheckServedVerdicts(t *testing.T) {
	t.Parallel()
	info := func(kv map[string]any) map[string]any {
		out := map[string]any{"general.architecture": "llama-embed", "llama-embed.embedding_length": float64(4096)}
		for k, v := range kv {
			out[k] = v
		}
		return out
	}
	embedding := []model.Capability{model.CapabilityEmbedding}
	cases := []struct {
		name string
		show api.ShowResponse
		want []string // empty: fit
	}{
		{"prepared", api.ShowResponse{Capabilities: embedding, Parameters: "num_ctx 8192\nnum_batch 8192",
			ModelInfo: info(map[string]any{"llama-embed.pooling_type": float64(1), "llama-embed.attention.causal": false})}, nil},
		{"served causally", api.ShowResponse{Capabilities: embedding,
			ModelInfo: info(map[string]any{"llama-embed.pooling_type": float64(1), "llama-embed.attention.causal": true})},
			[]string{"llama-embed.attention.causal is true (want false"}},
		{"last-token pooling", api.ShowResponse{Capabilities: embedding,
			ModelInfo: info(map[string]any{"llama-embed.pooling_type": float64(3), "llama-embed.attention.causal": false})},
			[]string{"llama-embed.pooling_type is 3 (want 1"}},
		{"as converted", api.ShowResponse{Capabilities: []model.Capability{model.CapabilityCompletion}, ModelInfo: info(nil)},
			[]string{"pooling_type is not set", "attention.causal is not set", "no embedding capability", "501"}},
		{"an Ollama that lists no capabilities, pooled model", api.ShowResponse{
			ModelInfo: map[string]any{"general.architecture": "bert", "bert.embedding_length": float64(4096), "bert.pooling_type": float64(1)}}, nil},
		{"an Ollama that lists no capabilities, no pooling", api.ShowResponse{
			ModelInfo: map[string]any{"general.architecture": "llama", "llama.embedding_length": float64(4096)}}, []string{"no embedding capability"}},
		{"another length", api.ShowResponse{Capabilities: embedding,
			ModelInfo: map[string]any{"general.architecture": "bert", "bert.embedding_length": float64(768), "bert.pooling_type": float64(1)}},
			[]string{"bert.embedding_length is 768, EMBED_DIMENSIONS is 4096", "set EMBED_DIMENSIONS"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := CheckServed(&c.show, "m", "http://ollama", 4096)
			if len(c.want) == 0 {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrModelUnfit)
			for _, w := range c.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
	s, err := CheckServed(&cases[0].show, "m", "h", 4096)
	require.NoError(t, err)
	require.Equal(t, Served{Architecture: "llama-embed", Dims: 4096, Capabilities: []string{"embedding"}, NumCtx: 8192, NumBatch: 8192}, s)
}

func TestVersionBefore(t *testing.T) {
	t.Parallel()
	for v, before := range map[string]bool{"0.24.0": true, "0.0.0": true, "v0.29.9": true, "0.30.0": false, "0.32.15": false, "0.33.0-rc1": false, "dev": false} {
		require.Equal(t, before, versionBefore(v, MinOllamaForLlamaEmbed), v)
	}
}
