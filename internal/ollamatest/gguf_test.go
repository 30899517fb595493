package ollamatest

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWriteGGUFIsDeterministicAndAligned(t *testing.T) {
	t.Parallel()
	m := DefaultTinyBERT()
	var a, b bytes.Buffer
	require.NoError(t, m.WriteGGUF(&a))
	require.NoError(t, m.WriteGGUF(&b))
	require.Equal(t, a.Bytes(), b.Bytes())
	require.Equal(t, "GGUF", a.String()[:4])
	require.Zero(t, a.Len()%ggufAlignment)
}
