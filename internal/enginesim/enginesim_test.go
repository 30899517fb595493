package enginesim_test

import (
	"context"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/enginesim"
	"github.com/waywo/embed/internal/ollama"
	"github.com/waywo/embed/internal/openai"
)

// The modelled pass: a short one is bound by reading the weights (15 GB at
// 4.8 TB/s, about 3.1 ms), a long one by its FLOPs; a full pass of
// 20-token queries costs about what one long pass does, and holds hundreds.
func TestCostModel(t *testing.T) {
	c := enginesim.Default(enginesim.H200)
	weights := time.Duration(15e9 / 4.8e12 * float64(time.Second))
	require.InDelta(t, float64(time.Millisecond+weights), float64(c.Pass(1)), float64(10*time.Microsecond))
	require.InDelta(t, float64(time.Millisecond)+2*7.5e9*(8192+128)/790e12*1e9, float64(c.Pass(8192)), float64(10*time.Microsecond))
	require.Greater(t, enginesim.Default(enginesim.H100).Pass(1), c.Pass(1), "slower memory")
	require.Greater(t, c.Ceiling(20), 5*c.Serial(20), "queries gain most from batching")
	require.Greater(t, c.Ceiling(200), c.Serial(200))
	require.Less(t, c.Ceiling(200), c.Ceiling(20))
}

// Through both APIs: vectors of the right length; a serial engine makes a
// pass per sequence, a batching one packs concurrent calls' sequences.
func TestServers(t *testing.T) {
	cost := enginesim.Default(enginesim.H200)
	for _, batching := range []bool{false, true} {
		s, err := enginesim.Start(cost, "sim", 64, batching)
		require.NoError(t, err)
		defer s.Stop()
		u, err := url.Parse(s.URL)
		require.NoError(t, err)
		ol := ollama.NewEndpoint(u, ollama.Options{Model: "sim", Dims: 64, MaxBatch: 32, Timeout: 10 * time.Second, KeepAlive: -1, Truncate: true})
		require.NoError(t, ol.Prepare(context.Background()))
		v1, err := url.Parse(s.URL + "/v1")
		require.NoError(t, err)
		oa := openai.NewEndpoint(v1, openai.Options{Model: "sim", Dims: 64, MaxBatch: 32, Timeout: 10 * time.Second})
		require.NoError(t, oa.Prepare(context.Background()))

		before := s.Stats()
		in := []string{strings.Repeat("w", 76), strings.Repeat("w", 796)} // 20 and 200 tokens
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				out, err := oa.EmbedAll(context.Background(), in)
				require.NoError(t, err)
				require.Len(t, out.Vectors[1], 64)
				require.Equal(t, 220, out.Tokens)
				out, err = ol.EmbedAll(context.Background(), in)
				require.NoError(t, err)
				require.Len(t, out.Vectors[0], 64)
			})
		}
		wg.Wait()
		st := s.Stats()
		seqs, passes := st.Sequences-before.Sequences, st.Passes-before.Passes
		require.EqualValues(t, 32, seqs)
		if batching {
			require.Less(t, passes, seqs, "sequences of calls in flight share passes")
		} else {
			require.Equal(t, seqs, passes, "one pass per sequence")
		}
	}
}
