package prompt

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Expected values are what the backend's Python expression returns.
func TestProjectText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		title, desc string
		tags        []string
		want        string
	}{
		{"Waywo", "A site for HN projects", []string{"go", "nats"}, "Waywo\nA site for HN projects\n#go #nats"},
		{"Waywo", "A site", nil, "Waywo\nA site"},
		{"Waywo", "A site", []string{}, "Waywo\nA site"},
		{"  Padded ", " desc \n", nil, "Padded \n desc"},
		{"", "", nil, ""},
		{"", "", []string{"solo"}, "#solo"},
		{"T", "", []string{"a"}, "T\n\n#a"},
		{"\x1cT", "D\u00a0", nil, "T\nD"},
	} {
		require.Equal(t, tc.want, ProjectText(tc.title, tc.desc, tc.tags), "%q %q %v", tc.title, tc.desc, tc.tags)
	}
}

func TestQuery(t *testing.T) {
	t.Parallel()
	require.Equal(t, "Instruct: find things\nQuery: rust", Query("find things", "rust"))
}
