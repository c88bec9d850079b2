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

func openRelay(t *testing.T) *maps.Relay {
	t.Helper()
	testenv.RequireRoot(t)
	l, err := loader.OpenRelay()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return maps.NewRelay(l.Maps())
}

func pairSession(t *testing.T, r *maps.Relay) relayed {
	t.Helper()
	s := pairUnacked(t, r)
	// The hub's ack, without which the program redirects nothing.
	for _, c := range []struct {
		hub, agent *net.TCPConn
		d          *maps.Direction
	}{{s.a, s.left, s.p.BToA}, {s.b, s.right, s.p.AToB}} {
		if _, err := c.hub.Write([]byte{6}); err != nil {
			t.Fatal(err)
		}
		if err := c.d.Wrote(1); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c.agent, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// pairUnacked pairs a session whose hub has written nothing yet.
func pairUnacked(t *testing.T, r *maps.Relay) relayed {
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
	if s.p, err = r.Pair(s.a, s.b); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.p.Unpair(); err != nil {
			t.Error(err)
		}
	})
	return s
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
	if f.Redirected != redirected || f.Passed != 0 || f.Held {
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
	s := pairSession(t, openRelay(t))
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

// TestRelayHeldUntilAck: bytes an agent sends before the hub has written
// its ack on the other side go to the hub, which relays them after the
// ack; the next ones cross in the kernel.
func TestRelayHeldUntilAck(t *testing.T) {
	s := pairUnacked(t, openRelay(t))
	if _, err := s.left.Write([]byte("early")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := hubEnd(s.a, buf)
	if err != nil || string(buf[:n]) != "early" {
		t.Fatalf("the hub read %q, %v; want the bytes sent before the ack", buf[:n], err)
	}
	if _, err := s.b.Write([]byte{6}); err != nil {
		t.Fatal(err)
	}
	if err := s.p.AToB.Wrote(1); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, s.p.AToB, s.b)
	if _, err := s.b.Write(buf[:n]); err != nil {
		t.Fatal(err)
	}
	if err := s.p.AToB.Relayed(uint64(n)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.left.Write([]byte(" late")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("\x06early late"))
	if _, err := io.ReadFull(s.right, got); err != nil || string(got) != "\x06early late" {
		t.Fatalf("right read %q, %v; want the ack, then the bytes in order", got, err)
	}
	f, err := s.p.AToB.Flow()
	if err != nil {
		t.Fatal(err)
	}
	if want := (maps.RelayFlow{Redirected: 5, Passed: 5}); f != want {
		t.Errorf("%+v, want %+v: the early bytes passed, the late ones redirected", f, want)
	}
}

// TestRelayReset: a reset from one agent shows on the hub's socket, and the
// hub's abort of the other reaches the other agent as a reset.
func TestRelayReset(t *testing.T) {
	s := pairSession(t, openRelay(t))
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

// TestRelayBackpressure: a peer that does not read stops its sender after
// a bounded amount (the kernel alone would queue everything in the hub).
// The bytes past the bound go to the hub, which relays them after the
// drained queue, in order; once it has caught up, the kernel redirects
// again.
func TestRelayBackpressure(t *testing.T) {
	s := pairSession(t, openRelay(t))
	up := pattern(256 << 20)
	s.left.SetWriteDeadline(time.Now().Add(time.Second))
	n, err := s.left.Write(up)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("left wrote %d MiB of %d to a peer that does not read (%v)", n>>20, len(up)>>20, err)
	}
	held, err := s.p.AToB.Flow()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("left wrote %d MiB before blocking; %+v", n>>20, held)
	if n > 16<<20 || !held.Held || held.Passed == 0 {
		t.Errorf("left wrote %d MiB (%+v): want it held back after a few MiB", n>>20, held)
	}

	s.left.SetWriteDeadline(time.Time{})
	sent := send(s.left, up[n:], false)
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, len(up))
		_, err := io.ReadFull(s.right, b)
		if err != nil {
			b = nil
		}
		got <- b
	}()
	relayed, total := uint64(0), uint64(len(up))
	for buf := make([]byte, 64<<10); ; {
		if held, err = s.p.AToB.Flow(); err != nil {
			t.Fatal(err)
		}
		if held.Passed == relayed && held.Passed+held.Redirected == total {
			break
		}
		s.a.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := hubEnd(s.a, buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		waitDrained(t, s.p.AToB, s.b)
		if _, err := s.b.Write(buf[:n]); err != nil {
			t.Fatal(err)
		}
		relayed += uint64(n)
		if err := s.p.AToB.Relayed(uint64(n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, up) {
		t.Fatalf("right read %d bytes, not the %d left sent, in order", len(b), len(up))
	}
	t.Logf("%+v", held)
	// Caught up: the next bytes are redirected again.
	if _, err := s.left.Write([]byte("tail")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s.right, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	f, err := s.p.AToB.Flow()
	if err != nil {
		t.Fatal(err)
	}
	if f.Held || f.Passed != held.Passed || f.Redirected != held.Redirected+4 {
		t.Errorf("after the hub caught up: %+v, want the 4 new bytes redirected", f)
	}
}
