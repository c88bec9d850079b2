package api

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Listen opens the unix socket at path, mode 0600, replacing a stale socket
// left by a dead agent but refusing to steal a live one's. Nobody else can
// connect to it at any moment, whatever the umask and however open path's
// directory is: the socket is bound in a fresh directory of its own (0700),
// made 0600 there, and only then renamed into place. Path's directory is
// made 0700 if it does not exist. Closing the listener removes the socket.
func Listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("listen on %s: another agent is serving this socket; pass another --api", path)
	}
	private, err := os.MkdirTemp(dir, "."+filepath.Base(path)+".")
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	defer os.RemoveAll(private)
	// MkdirTemp's 0700 went through the umask, which may have taken the
	// owner's bits too.
	if err := os.Chmod(private, 0o700); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	bound := filepath.Join(private, "socket")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: bound, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // it will not be at bound
	err = os.Chmod(bound, 0o600)
	if err == nil {
		err = os.Rename(bound, path) // replaces a stale socket atomically
	}
	var st os.FileInfo
	if err == nil {
		st, err = os.Lstat(path)
	}
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return &listener{UnixListener: ln, path: path, file: st}, nil
}

// listener is a unix listener renamed into place after its bind.
type listener struct {
	*net.UnixListener
	path string
	file os.FileInfo // the socket file as Listen left it
	once sync.Once
}

// Addr returns the socket's address, where it was renamed to.
func (l *listener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

// Close stops listening and removes the socket file, unless it has been
// replaced since.
func (l *listener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if st, serr := os.Lstat(l.path); serr == nil && os.SameFile(st, l.file) {
			os.Remove(l.path)
		}
	})
	return err
}
