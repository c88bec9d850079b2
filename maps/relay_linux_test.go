package maps_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/maps"
	"github.com/sluicehq/sluice/testenv"
)

// relayed is one session through the relay on loopback: the two agents'
// ends (left, right) and the hub's (a, b), paired.
type relayed struct {
	left, right, a, b *net.TCPConn
	p                 *maps.Pairing
}

func openRelay(t *testing.T, opts loader.RelayOptions) *maps.Relay {
	t.Helper()
	testenv.RequireRoot(t)
	l, err := loader.OpenRelay(opts)
	if err != nil {
		t.Fatal(err)
	}
	r, err := maps.NewRelay(l.Maps())
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := errors.Join(r.Close(), l.Close()); err != nil {
			t.Error(err)
		}
	})
	return r
}

func pairSession(t *testing.T, r *maps.Relay) relayed {
	t.Helper()
	s := connect(t)
	// The pairing, then the hub's ack, as the hub does it.
	s.pair(t, r)
	for _, c := range []struct{ hub, agent *net.TCPConn }{{s.b, s.right}, {s.a, s.left}} {
		if _, err := c.hub.Write([]byte{6}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c.agent, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// connect makes the agents' and the hub's connections of a session.
func connect(t *testing.T) relayed {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var s relayed
	for _, c := range []struct{ agent, hub **net.TCPConn }{{&s.left, &s.a}, {&s.right, &s.b}} {
		if *c.agent, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr)); err != nil {
			t.Fatal(err)
		}
		if *c.hub, err = ln.AcceptTCP(); err != nil {
			t.Fatal(err)
		}
		(*c.agent).SetDeadline(time.Now().Add(20 * time.Second))
	}
	t.Cleanup(func() { s.left.Close(); s.right.Close(); s.a.Close(); s.b.Close() })
	return s
}

// pair joins the hub's connections; the hub's 1-byte ack follows.
func (s *relayed) pair(t *testing.T, r *maps.Relay) {
	t.Helper()
	p, err := r.Pair(s.a, s.b, 1)
	if err != nil {
		t.Fatal(err)
	}
	s.p = p
	t.Cleanup(func() {
		if err := p.Unpair(); err != nil {
			t.Error(err)
		}
	})
}

// pattern is n bytes of big-endian counters, so that a reordering shows.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := 0; i+4 <= n; i += 4 {
		binary.BigEndian.PutUint32(b[i:], uint32(i/4))
	}
	return b
}

// hubEnd waits, as the hub does, until c has something for its owner,
// and reads it: bytes the kernel passed up, EOF or an error. (Not with
// MSG_PEEK: peeking at a socket in a sockmap returned some bytes twice to
// later reads on Linux 6.18.)
func hubEnd(c *net.TCPConn, buf []byte) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	err = raw.Read(func(fd uintptr) bool {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		return n > 0 || err != nil
	})
	if err != nil {
		return 0, err
	}
	return c.Read(buf)
}

func send(c *net.TCPConn, b []byte, closeWrite bool) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := c.Write(b)
		if err == nil && closeWrite {
			err = c.CloseWrite()
		}
		done <- err
	}()
	return done
}

func readAll(c *net.TCPConn) <-chan []byte {
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(c); got <- b }()
	return got
}

// waitDrained waits until every redirected byte of d has left the
// kernel's queue for peer.
func waitDrained(t *testing.T, d *maps.Direction, peer *net.TCPConn) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Microsecond) {
		ok, err := d.Drained(peer)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the kernel's queue for the peer did not drain")
		}
	}
}

func checkFlow(t *testing.T, name string, d *maps.Direction, redirected uint64) maps.RelayFlow {
	t.Helper()
	f, err := d.Flow()
	if err != nil {
		t.Fatal(err)
	}
	if f.Redirected != redirected || f.Passed != 0 || f.Overflow {
		t.Errorf("%s: %+v, want %d bytes redirected and none passed", name, f, redirected)
	}
	return f
}

// finish does what the hub does on a direction whose source showed EOF:
// wait for the kernel's queue to drain, then pass the FIN on.
func finish(t *testing.T, src, dst *net.TCPConn, d *maps.Direction) {
	t.Helper()
	if n, err := hubEnd(src, make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("the hub's socket showed %d bytes (%v) instead of EOF: not all redirected", n, err)
	}
	waitDrained(t, d, dst)
	if err := dst.CloseWrite(); err != nil {
		t.Fatal(err)
	}
}

// TestRelayBothWays: bytes cross in both directions at once, intact and in
// order, all redirected by the kernel: the hub's sockets show their owner
// nothing but the FINs, which the hub passes on once the queue has drained
// (at once, it would lose the bytes the kernel worker has not sent yet).
// Each direction ends on its own. The sizes stay under BacklogMax.
func TestRelayBothWays(t *testing.T) {
	s := pairSession(t, openRelay(t, loader.RelayOptions{}))
	up, down := pattern(768<<10), pattern(256<<10)
	sentUp, sentDown := send(s.left, up, true), send(s.right, down, false)
	gotUp := readAll(s.right)
	gotDown := make([]byte, len(down))
	if _, err := io.ReadFull(s.left, gotDown); err != nil || !bytes.Equal(gotDown, down) {
		t.Fatalf("left read %v, not the bytes right sent", err)
	}
	finish(t, s.a, s.b, s.p.AToB)
	if b := <-gotUp; !bytes.Equal(b, up) {
		t.Fatalf("right read %d bytes, want the %d left sent, in order", len(b), len(up))
	}
	if err := errors.Join(<-sentUp, <-sentDown); err != nil {
		t.Fatal(err)
	}
	// The half-closed session still carries the other direction.
	if _, err := s.right.Write([]byte("after FIN")); err != nil {
		t.Fatal(err)
	}
	if err := s.right.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	gotLast := readAll(s.left)
	finish(t, s.b, s.a, s.p.BToA)
	if b := <-gotLast; string(b) != "after FIN" {
		t.Errorf("left read %q then EOF, want %q", b, "after FIN")
	}
	checkFlow(t, "a to b", s.p.AToB, uint64(len(up)))
	checkFlow(t, "b to a", s.p.BToA, uint64(len(down)+len("after FIN")))
}

// TestRelayQueuedBeforePair: bytes queued in a socket before the hub
// paired it (an agent that did not wait for its ack) cross in the kernel,
// even with nothing after them to wake the program, and before later
// bytes.
func TestRelayQueuedBeforePair(t *testing.T) {
	s := connect(t)
	if _, err := s.left.Write([]byte("early")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // queued in the hub's socket
	s.pair(t, openRelay(t, loader.RelayOptions{}))
	got := make([]byte, len("early late"))
	s.right.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := io.ReadFull(s.right, got[:5]); err != nil || string(got[:5]) != "early" {
		t.Fatalf("right read %q, %v; want the bytes queued before the pairing", got[:5], err)
	}
	if _, err := s.left.Write([]byte(" late")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s.right, got[5:]); err != nil || string(got) != "early late" {
		t.Fatalf("right read %q, %v; want the bytes in order", got, err)
	}
	checkFlow(t, "a to b", s.p.AToB, uint64(len(got)))
}

// TestRelayReset: a reset from one agent shows on the hub's socket, and the
// hub's abort of the other reaches the other agent as a reset.
func TestRelayReset(t *testing.T) {
	s := pairSession(t, openRelay(t, loader.RelayOptions{}))
	if _, err := s.left.Write([]byte("before reset")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s.right, make([]byte, len("before reset"))); err != nil {
		t.Fatal(err)
	}
	s.left.SetLinger(0)
	s.left.Close()
	if _, err := hubEnd(s.a, make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("hub socket after the agent's reset: %v, want ECONNRESET", err)
	}
	s.b.SetLinger(0)
	s.b.Close()
	if _, err := s.right.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("right after the hub's abort: %v, want ECONNRESET", err)
	}
}

// TestRelayOverflow: the kernel gives a redirect no backpressure, so a
// peer that does not read lets its sender go on far past the bound; the
// program reports the direction, once.
func TestRelayOverflow(t *testing.T) {
	const bound = 4 << 20
	r := openRelay(t, loader.RelayOptions{BacklogMax: bound})
	s := pairSession(t, r)
	reported := make(chan uint64, 1)
	go func() {
		for {
			k, err := r.NextOverflow()
			if err != nil {
				close(reported)
				return
			}
			reported <- k
		}
	}()
	buf := make([]byte, 256<<20) // before the deadline: with -race, making it takes a while
	s.left.SetWriteDeadline(time.Now().Add(time.Second))
	n, err := s.left.Write(buf)
	if !errors.Is(err, os.ErrDeadlineExceeded) && err != nil {
		t.Fatal(err)
	}
	t.Logf("left wrote %d MiB to a peer that does not read", n>>20)
	select {
	case k := <-reported:
		if k != s.p.AToB.Cookie() {
			t.Errorf("the program reported cookie %d, want a to b's %d", k, s.p.AToB.Cookie())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no overflow reported")
	}
	f, err := s.p.AToB.Flow()
	if err != nil {
		t.Fatal(err)
	}
	if !f.Overflow || f.Redirected <= bound || n <= bound {
		t.Errorf("%+v after %d bytes written: want more than %d redirected, and reported", f, n, bound)
	}
	select {
	case k, ok := <-reported:
		if ok {
			t.Errorf("cookie %d reported again", k)
		}
	case <-time.After(100 * time.Millisecond):
	}
}
