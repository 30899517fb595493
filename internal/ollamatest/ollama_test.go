package ollamatest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { RunTests(m) }

func embedDirect(t *testing.T, s *Server, texts ...string) [][]float32 {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": s.Model, "input": texts})
	resp, err := http.Post(s.URL+"/api/embed", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var out struct{ Embeddings [][]float32 }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return out.Embeddings
}

// The generated model must behave as a bag of words inside a real Ollama:
// shared words pull vectors together, the same text gives the same vector.
func TestTinyModelEmbedsMeaningInRealOllama(t *testing.T) {
	t.Parallel()
	s := Shared(t)
	v := embedDirect(t, s, "a rust web server for hackers", "rust web server", "garden recipe kitchen", "a rust web server for hackers")
	require.Len(t, v, 4)
	require.Len(t, v[0], s.Dims)
	require.InDelta(t, 1.0, Cosine(v[0], v[3]), 1e-6)
	near, far := Cosine(v[0], v[1]), Cosine(v[0], v[2])
	require.Greater(t, near, far+0.2, "near=%.3f far=%.3f", near, far)
}
