package api

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/sluicehq/sluice/testenv"
)

const nobody = 65534

// watcher connects to a unix socket in a tight loop as user nobody, from an
// OS thread of its own whose credentials alone are dropped (the raw
// set*id system calls change only the calling thread; syscall.Setresuid
// would change the whole process).
type watcher struct {
	path      string
	stop      atomic.Bool
	connected atomic.Int64 // connections that succeeded
	tries     atomic.Int64
	done      chan error
}

func watch(path string, checks func(connect func(string) error) error) *watcher {
	w := &watcher{path: path, done: make(chan error, 1)}
	go func() {
		// The thread is never unlocked: it ends with the goroutine, so
		// that no other goroutine runs with its credentials.
		runtime.LockOSThread()
		for _, call := range [][4]uintptr{
			{syscall.SYS_SETGROUPS, 0, 0, 0},
			{syscall.SYS_SETRESGID, nobody, nobody, nobody},
			{syscall.SYS_SETRESUID, nobody, nobody, nobody},
		} {
			if _, _, e := syscall.RawSyscall(call[0], call[1], call[2], call[3]); e != 0 {
				w.done <- e
				return
			}
		}
		if err := checks(connect); err != nil {
			w.done <- err
			return
		}
		for !w.stop.Load() {
			w.tries.Add(1)
			if connect(w.path) == nil {
				w.connected.Add(1)
			}
		}
		w.done <- nil
	}()
	return w
}

// connect connects to a unix socket and closes the connection, with system
// calls on the calling thread.
func connect(path string) error {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	return syscall.Connect(fd, &syscall.SockaddrUnix{Name: path})
}

// TestListenNeverWorldAccessible (issue 9): with umask 000, in a directory
// anyone may enter, another user who tries to connect in a tight loop while
// the socket is created over and over (fresh, or over a stale socket) never
// gets in, and the socket is 0600 each time.
func TestListenNeverWorldAccessible(t *testing.T) {
	testenv.RequireRoot(t)
	dir, err := os.MkdirTemp("", "sluice-api-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil { // like a shared run directory
		t.Fatal(err)
	}
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })

	// The watcher proves it can connect where it is allowed and that it is
	// not root before its failures count.
	open := serveUnix(t, filepath.Join(dir, "open.sock"), 0o777)
	closed := serveUnix(t, filepath.Join(dir, "closed.sock"), 0o600)
	sock := filepath.Join(dir, "agent.sock")
	w := watch(sock, func(connect func(string) error) error {
		if err := connect(open); err != nil {
			return errors.Join(errors.New("watcher cannot connect to a 0777 socket"), err)
		}
		if err := connect(closed); !errors.Is(err, syscall.EACCES) {
			return errors.Join(errors.New("watcher connected to a 0600 socket of root's, or failed otherwise"), err)
		}
		return nil
	})
	const rounds = 1000
	for i := range rounds {
		ln, err := Listen(sock)
		if err != nil {
			w.stop.Store(true)
			t.Fatalf("round %d: %v", i, err)
		}
		st, err := os.Stat(sock)
		if err != nil || st.Mode().Perm() != 0o600 || st.Mode().Type() != os.ModeSocket {
			t.Errorf("round %d: socket %v, %v; want a socket, 0600", i, st.Mode(), err)
		}
		if i%2 == 0 {
			ln.Close()
		} else {
			ln.(*listener).UnixListener.Close() // leaves a stale socket to replace
		}
	}
	w.stop.Store(true)
	if err := <-w.done; err != nil {
		t.Fatal(err)
	}
	if n := w.connected.Load(); n != 0 {
		t.Errorf("user nobody connected %d times in %d tries during %d Listens", n, w.tries.Load(), rounds)
	}
	t.Logf("user nobody tried %d times during %d Listens", w.tries.Load(), rounds)
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 { // open.sock, closed.sock, the last stale agent.sock
		names := []string{}
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %q, want the sockets only, no private directory left", names)
	}
}

// serveUnix listens on a unix socket of the given mode, accepting and closing.
func serveUnix(t *testing.T, path string, mode os.FileMode) string {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return path
}

// TestListenReplacedSocketSurvivesClose: closing a listener whose socket
// file was replaced since (by a newer agent) leaves the newer one in place.
func TestListenReplacedSocketSurvivesClose(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln1, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ln1.(*listener).UnixListener.Close() // as if the first agent hung up
	ln2, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	ln1.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the second agent's socket is gone after the first's listener closed: %v", err)
	}
	if got := ln2.Addr().String(); got != sock {
		t.Errorf("listener address %q, want %q", got, sock)
	}
}

func TestListenSocketRules(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "run", "agent.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(sock)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if _, err := Listen(sock); err == nil || !strings.Contains(err.Error(), "another agent") {
		t.Errorf("Listen on a live socket = %v, want a refusal", err)
	}
	ln.(*listener).UnixListener.Close() // the socket file stays, as after a crash
	// A stale socket file left by a dead agent is replaced.
	ln2, err := Listen(sock)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln2.Close()
}
