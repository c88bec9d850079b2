package pipe_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/pipe"
)

// readEnd reads c to its end and returns what it read and how it ended.
func readEnd(t *testing.T, c *net.TCPConn) ([]byte, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(deadline))
	return io.ReadAll(c)
}

// TestArmedCloseResets: an armed connection closed by anything but a
// stream's clean end (here a bare close(2), which is what the kernel does
// to the sockets of a process that dies) ends in a reset, never a FIN.
func TestArmedCloseResets(t *testing.T) {
	peer, c := tcpPair(t)
	if err := pipe.Arm(c); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("part of a stream")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got, err := readEnd(t, peer); !pipe.IsReset(err) {
		t.Fatalf("peer read %q then %v; want a reset", got, err)
	}
}

// TestArmedListener: connections accepted by an armed listener are armed
// from the start, before the program has touched them.
func TestArmedListener(t *testing.T) {
	lc := net.ListenConfig{Control: pipe.ArmControl}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c, err := ln.(*net.TCPListener).AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got, err := readEnd(t, peer); !pipe.IsReset(err) {
		t.Fatalf("peer of an accepted connection read %q then %v; want a reset", got, err)
	}
}

// TestCleanEndDisarms: when a stream ends cleanly, pipe.Run disarms its
// connections before closing them, so that the bytes still queued in the
// kernel reach the peer, followed by a FIN. The app reads nothing until
// the pipe has ended, so its receive window (a tenth of the answer) keeps
// most of the target's answer queued in the pipe's socket when Run closes
// it.
func TestCleanEndDisarms(t *testing.T) {
	f := newFixture(t, "tcp")
	f.aRaw.SetWriteBuffer(4 << 20)
	for _, c := range []*net.TCPConn{f.aRaw, f.targetRaw} {
		if err := pipe.Arm(c); err != nil {
			t.Fatal(err)
		}
	}
	wait := f.run(t, context.Background(), nil)
	answer := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	if _, err := f.target.Write(answer); err != nil {
		t.Fatal(err)
	}
	if err := f.target.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := f.app.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if res := wait(); res.Err != nil {
		t.Fatalf("pipe ended with %v, want a clean end", res.Err)
	}
	got, err := readEnd(t, f.appRaw)
	if err != nil || !bytes.Equal(got, answer) {
		t.Fatalf("app read %d of %d bytes, then %v; want all of them and EOF", len(got), len(answer), err)
	}
}
