package worker

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/prompt"
	"github.com/waywo/embed/internal/wire"
)

// A job's tokens are estimated from its bytes, a query's instruction
// included, at 4 bytes a token until a server reports its counts; then at
// the ratio it reports.
func TestTokenEstimatesLearnTheServersRatio(t *testing.T) {
	r := newTokenRate()
	doc := wire.Job{InputType: wire.InputDocument, Documents: []string{strings.Repeat("a", 400), strings.Repeat("b", 40)}}
	require.Equal(t, 110+2, r.estimate(doc, "task"))
	query := wire.Job{InputType: wire.InputQuery, Documents: []string{strings.Repeat("q", 40)}}
	require.Equal(t, (40+len(prompt.Query("task", ""))+3)/4+1, r.estimate(query, "task"))

	for range 50 {
		r.learn(1000, 2000) // this tokenizer takes 2 bytes a token
	}
	require.InDelta(t, 0.5, r.perByte(), 0.001)
	require.InDelta(t, 220+2, r.estimate(doc, "task"), 1)
	r.learn(0, 100) // a server that reports no tokens teaches nothing
	require.InDelta(t, 0.5, r.perByte(), 0.001)
}
