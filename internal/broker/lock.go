package broker

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrDataDirInUse means another process holds the data directory.
var ErrDataDirInUse = errors.New("data directory in use")

// DirLock is a held lock on a data directory (EMBED_DATA_DIR).
type DirLock struct{ f *os.File }

// LockDataDir takes the data directory for this process: two nats-servers
// on one JetStream store each write their own block files, and after a
// restart one's acknowledged messages are gone. It fails at once, naming
// the holder (pid, host, address, since when), when another process holds
// it; holder describes this one for the next. The lock is the kernel's
// (flock), so a killed holder frees it.
func LockDataDir(dir, holder string) (*DirLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("data directory %s (EMBED_DATA_DIR): %w", dir, err)
	}
	path := filepath.Join(dir, "embed.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		who, _ := io.ReadAll(io.LimitReader(f, 1024))
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s (EMBED_DATA_DIR) is held by %s; two apis on one JetStream store lose acknowledged events: stop that one, or give this one its own EMBED_DATA_DIR",
				ErrDataDirInUse, dir, strings.TrimSpace(string(who)))
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(holder+"\n"), 0)
	}
	return &DirLock{f: f}, nil
}

// Release lets the directory go.
func (l *DirLock) Release() {
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	_ = l.f.Close()
}
