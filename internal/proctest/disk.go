package proctest

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// SmallDisk mounts a tmpfs of size (such as "48m") for the test: a disk
// that really fills. It needs root, which CI has: under CI=true a test
// that cannot mount fails rather than skips.
func SmallDisk(tb testing.TB, size string) string {
	tb.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			tb.Fatal("a full disk needs a tmpfs mount, which needs root")
		}
		tb.Skip("a full disk needs a tmpfs mount, which needs root")
	}
	dir := tb.TempDir()
	require.NoError(tb, syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size))
	tb.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// Fill writes a file under dir until the disk is full and returns its
// path: delete it to free the space.
func Fill(tb testing.TB, dir string) string {
	tb.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	require.NoError(tb, err)
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			require.ErrorIs(tb, err, syscall.ENOSPC)
			return path
		}
	}
}
