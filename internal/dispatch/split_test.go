package dispatch

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSplitFitsMaxPayload(t *testing.T) {
	t.Parallel()
	const maxPayload = 1 << 20
	docs := make([]string, 200)
	for i := range docs {
		docs[i] = "d"
	}
	spans, err := Split(docs, 4096, maxPayload, 0)
	require.NoError(t, err)
	per := (maxPayload - replyOverhead) / (4096 * 4)
	require.Len(t, spans, (200+per-1)/per)
	next := 0
	for _, sp := range spans {
		require.Equal(t, next, sp[0], "spans are contiguous")
		require.LessOrEqual(t, (sp[1]-sp[0])*4096*4+replyOverhead, maxPayload, "a reply fits")
		next = sp[1]
	}
	require.Equal(t, 200, next)

	// Large documents split by bytes too.
	big := []string{strings.Repeat("a", 400<<10), strings.Repeat("b", 400<<10), strings.Repeat("c", 400<<10)}
	spans, err = Split(big, 384, maxPayload, 0)
	require.NoError(t, err)
	require.Equal(t, [][2]int{{0, 2}, {2, 3}}, spans)

	_, err = Split([]string{"x", strings.Repeat("a", maxPayload)}, 384, maxPayload, 0)
	var de *DocumentError
	require.ErrorAs(t, err, &de)
	require.Equal(t, 1, de.Index)
	require.ErrorIs(t, err, ErrTooLarge)
}

func TestRequestIDsMustBeSubjectTokens(t *testing.T) {
	t.Parallel()
	require.True(t, validToken("lQQ2u05P2jlKcLtKMu3FE0"))
	require.True(t, validToken("req-1_a"))
	for _, id := range []string{"a.b", "a b", "a*", ">", strings.Repeat("x", 200)} {
		require.False(t, validToken(id), id)
	}
}
