package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// lockFile, in the state directory, is locked (flock) by the agent that
// runs on it, for its whole life, and holds its pid.
const lockFile = "agent.lock"

// ErrStateDirBusy means another agent runs on the state directory. Two
// agents on one state directory are one node twice: each would claim the
// other's relay names at the hub and rewrite the other's saved portals.
var ErrStateDirBusy = errors.New("state directory in use")

// stateLock is the agent's hold on its state directory.
type stateLock struct {
	once sync.Once
	f    *os.File
}

// lockStateDir takes the state directory's lock without waiting, creating
// the directory if needed; the kernel drops the lock when the process ends,
// however it ends.
func lockStateDir(dir string) (*stateLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("lock state directory: %w", err)
	}
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock state directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		pid := "unknown"
		if b, rerr := os.ReadFile(path); rerr == nil {
			if n, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
				pid = strconv.Itoa(n)
			}
		}
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("start agent: %s is in use by another agent (pid %s); stop it, or give this one its own --state-dir (%w)", dir, pid, ErrStateDirBusy)
		}
		return nil, fmt.Errorf("lock state directory %s: %w", dir, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &stateLock{f: f}, nil
}

// Close releases the lock; closing twice is fine.
func (l *stateLock) Close() {
	if l != nil {
		l.once.Do(func() { l.f.Close() })
	}
}
