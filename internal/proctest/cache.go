package proctest

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Cached returns the path of file in the user cache's
// waywo-embed/<dir>, calling build(dir, path) to make it when it is not
// there yet: tools the tests build once and reuse (Ollama, Jaeger), outside
// the repository. Concurrent test processes wait on a file lock rather
// than build twice.
func Cached(dir, file string, build func(dir, path string) error) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory: %w", err)
	}
	dir = filepath.Join(cache, "waywo-embed", dir)
	path := filepath.Join(dir, file)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", dir, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck
	if _, err := os.Stat(path); err == nil {
		return path, nil // another process built it while we waited
	}
	if err := build(dir, path); err != nil {
		return "", err
	}
	return path, nil
}
