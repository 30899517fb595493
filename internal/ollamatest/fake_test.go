package ollamatest

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/stretchr/testify/require"
)

// startFakeClient starts a fake of an 8-d model "m" spending perInput per
// input, stopped when the test ends, and an Ollama client of it.
func startFakeClient(t *testing.T, perInput time.Duration) (*Fake, *api.Client) {
	t.Helper()
	f, err := StartFake("m", 8, perInput)
	require.NoError(t, err)
	t.Cleanup(f.Stop)
	u, _ := url.Parse(f.URL)
	return f, api.NewClient(u, http.DefaultClient)
}

func TestFakeSpeaksTheOllamaAPI(t *testing.T) {
	t.Parallel()
	_, c := startFakeClient(t, 0)
	require.NoError(t, c.Heartbeat(context.Background()))
	_, err := c.Show(context.Background(), &api.ShowRequest{Model: "m"})
	require.NoError(t, err)
	_, err = c.Show(context.Background(), &api.ShowRequest{Model: "other"})
	require.Error(t, err)
	resp, err := c.Embed(context.Background(), &api.EmbedRequest{Model: "m", Input: []string{"a", "b"}})
	require.NoError(t, err)
	require.Len(t, resp.Embeddings, 2)
	require.Len(t, resp.Embeddings[1], 8)
	require.InDelta(t, 1.0, Cosine(resp.Embeddings[0], resp.Embeddings[1]), 1e-6)
	var norm float64
	for _, x := range resp.Embeddings[0] {
		norm += float64(x) * float64(x)
	}
	require.InDelta(t, 1.0, norm, 1e-5, "a unit vector")
	require.NotEqual(t, resp.Embeddings[0][0], resp.Embeddings[0][1], "values vary, like a real embedding's")
	require.Equal(t, 2, resp.PromptEvalCount)
}

func TestFakeRunnerStats(t *testing.T) {
	t.Parallel()
	f, c := startFakeClient(t, 2*time.Millisecond)
	for range 2 {
		_, err := c.Embed(context.Background(), &api.EmbedRequest{Model: "m", Input: []string{"a", "b", "c"}})
		require.NoError(t, err)
	}
	s := f.Stats()
	require.Equal(t, 2, s.Calls)
	require.GreaterOrEqual(t, s.Busy, 12*time.Millisecond, "six inputs at 2 ms each")
	require.Less(t, s.Busy, time.Second)
}

// A call that arrives while another computes waits for all of the other's
// inputs, as with Ollama, whose runner semaphore queues a call's inputs
// together: it does not slip in between them.
func TestFakeServesCallsInOrder(t *testing.T) {
	t.Parallel()
	f, c := startFakeClient(t, 20*time.Millisecond)
	first := make(chan error, 1)
	go func() {
		_, err := c.Embed(context.Background(), &api.EmbedRequest{Model: "m", Input: []string{"a", "b", "c", "d"}})
		first <- err
	}()
	// The first call holds the runner: its first input is computing.
	require.Eventually(t, func() bool { return f.Stats().Busy > 0 }, 5*time.Second, time.Millisecond)
	_, err := c.Embed(context.Background(), &api.EmbedRequest{Model: "m", Input: []string{"e"}})
	require.NoError(t, err)
	// Calls counts a call once its inputs are done: the first's were all
	// done before the second's one was.
	require.Equal(t, 2, f.Stats().Calls, "the second call was answered before the first was done")
	require.NoError(t, <-first)
}
