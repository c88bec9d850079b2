package hub_test

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/pipe"
	"github.com/sluicehq/sluice/agent/wire"
)

// stopBound is how long Serve may take to return after its context is
// cancelled. It has nothing to wait for but closing sockets.
const stopBound = 2 * time.Second

// TestStopWithLiveSession: cancelling Serve's context must end spliced
// sessions too; Serve waits for them.
func TestStopWithLiveSession(t *testing.T) {
	relayModes(t, func(t *testing.T, hub hub.HubOptions) {
		h := testhub.Start(t, testhub.Options{Hub: hub})
		conn, outlet := session(t, h)
		if _, err := conn.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(outlet, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		if err := h.StopWithin(stopBound); err != nil {
			t.Fatalf("%v: shutdown waited for a spliced session", err)
		}
		if _, err := io.ReadAll(conn); !pipe.IsReset(err) {
			t.Errorf("the inlet's data connection ended with %v, want a reset", err)
		}
	})
}

// TestStopWithSilentConnection: a connection that has not said anything yet
// must not hold up shutdown for the hello timeout.
func TestStopWithSilentConnection(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	c, err := net.Dial("tcp", h.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := h.StopWithin(stopBound); err != nil {
		t.Fatalf("%v: shutdown waited for a connection that never said hello", err)
	}
}

// TestPendingCountsHalfJoinedSession: Stats.Pending counts a session whose
// inlet has connected and whose outlet has not.
func TestPendingCountsHalfJoinedSession(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	tok := unanswered(t, h)
	if p := h.Relay().Stats().Pending; p != 1 {
		t.Fatalf("Stats.Pending = %d after a Dial, want 1", p)
	}
	dataConn(t, h, "SLD2", tok)
	// Once the hub has read the inlet's token the session is half-joined;
	// it is still pending. Give the hub a moment to read it.
	if testhub.WaitFor(500*time.Millisecond, func() bool { return h.Relay().Stats().Pending != 1 }) {
		t.Fatalf("Stats.Pending = %d with one half-joined session, want 1", h.Relay().Stats().Pending)
	}
}

// failingListener fails its first accepts as a process out of file
// descriptors does.
type failingListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestAcceptOutOfDescriptors: running out of file descriptors must not stop
// the hub; it waits and accepts again.
func TestAcceptOutOfDescriptors(t *testing.T) {
	fl := &failingListener{}
	fl.fails.Store(3)
	h := testhub.Start(t, testhub.Options{Listener: func(ln net.Listener) net.Listener {
		fl.Listener = ln
		return fl
	}})
	if _, err := h.Connect(t, testhub.AgentOptions{}); err == nil {
		t.Fatal("a node that is not a member connected") // any answer proves the hub serves
	} else if !errors.Is(err, wire.ErrNotMember) {
		t.Fatalf("connect after EMFILE: %v, want the hub's answer (not a member)", err)
	}
	if fl.fails.Load() >= 0 {
		t.Fatalf("the hub accepted before the injected failures were used up")
	}
}
