package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain fails the run when a privileged test left an owner file of this
// process behind: an env that was never closed.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 && os.Geteuid() == 0 {
		if left := ownedRuns(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "testenv: runs never closed: %v\n", left)
			code = 1
		}
	}
	os.Exit(code)
}

// ownedRuns lists the owner files that name this process.
func ownedRuns() []string {
	var ids []string
	entries, _ := os.ReadDir(ownerDir)
	for _, ent := range entries {
		rec, err := readOwner(filepath.Join(ownerDir, ent.Name()))
		if err == nil && rec.Pid == os.Getpid() {
			ids = append(ids, ent.Name())
		}
	}
	return ids
}

// serveWhoAmI answers every connection on l with the peer's address and a
// newline, then echoes what it reads.
func serveWhoAmI(l net.Listener) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "%s\n", c.RemoteAddr())
				io.Copy(c, c)
			}()
		}
	}()
}

// whoAmI dials addr from ns and returns the address the server saw.
func whoAmI(t *testing.T, ns *NS, addr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := ns.DialTCP(ctx, addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read from %s: %v", addr, err)
	}
	host, _, _ := net.SplitHostPort(strings.TrimSpace(line))
	return host
}

// dropped asserts that dialing addr from ns times out: the SYN was dropped,
// not refused.
func dropped(t *testing.T, ns *NS, addr string) {
	t.Helper()
	c, err := ns.DialTCP(context.Background(), addr, 500*time.Millisecond)
	if err == nil {
		c.Close()
		t.Errorf("from %s, %s answered", ns.Name(), addr)
		return
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("from %s, dial %s failed without timing out: %v", ns.Name(), addr, err)
	}
}

// listen listens on addr in ns and serves whoAmI there.
func listen(t *testing.T, ns *NS, addr string) string {
	t.Helper()
	l, err := ns.ListenTCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	serveWhoAmI(l)
	return l.Addr().String()
}

// gone tells whether pid is dead (or a zombie, which holds no resources).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && strings.HasPrefix(string(b[i+1:]), " Z")
}

// waitGone waits up to 5s for pid to die.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if gone(pid) {
			return
		}
	}
	t.Errorf("process %d still alive", pid)
}

// mustNS creates a namespace or fails the test.
func mustNS(t *testing.T, e *Env, role string) *NS {
	t.Helper()
	ns, err := e.Namespace(role)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
