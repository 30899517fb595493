package main

import (
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"
)

// The worker's image is static (CGO_ENABLED=0, distroless/static): nothing
// it imports may need cgo. go-sqlite3 once came in through httpapi's
// import of projectsync, and only the image build noticed.
func TestWorkerNeedsNoCgo(t *testing.T) {
	t.Parallel()
	cmd := exec.Command("go", "list", "-deps", ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.NotContains(t, string(out), "github.com/mattn/go-sqlite3")
	require.NotContains(t, string(out), "github.com/waywo/embed/internal/db")
}
