package relay_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/pipe"
	"github.com/sluicehq/sluice/agent/relay"
)

// stopBound is how long Serve may take to return after its context is
// cancelled. It has nothing to wait for but closing sockets.
const stopBound = 2 * time.Second

// TestStopWithLiveSession: cancelling Serve's context must end spliced
// sessions too; Serve waits for them.
func TestStopWithLiveSession(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	out, in := h.Enroll(t, nil, "svc"), h.Enroll(t, nil)
	sessions := answer(out)
	claim(t, out, "svc")
	conn, _ := dialData(t, in, "svc")
	s := next(t, sessions)
	if _, err := conn.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s.conn, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if err := h.StopWithin(stopBound); err != nil {
		t.Fatalf("%v: shutdown waited for a spliced session", err)
	}
	if _, err := io.ReadAll(conn); !pipe.IsReset(err) {
		t.Errorf("the inlet's data connection ended with %v, want a reset", err)
	}
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
	out, in := h.Enroll(t, nil, "svc"), h.Enroll(t, nil)
	out.OnIncoming(func(relay.Incoming) {}) // never opens its side
	claim(t, out, "svc")
	tok, _, err := in.Client.Dial(t.Context(), "svc")
	if err != nil {
		t.Fatal(err)
	}
	if p := h.Relay().Stats().Pending; p != 1 {
		t.Fatalf("Stats.Pending = %d after a Dial, want 1", p)
	}
	conn, err := in.Client.OpenData(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Once the hub has read the inlet's token the session is half-joined;
	// it is still pending. Give the hub a moment to read it.
	if testhub.WaitFor(500*time.Millisecond, func() bool { return h.Relay().Stats().Pending != 1 }) {
		t.Fatalf("Stats.Pending = %d with one half-joined session, want 1", h.Relay().Stats().Pending)
	}
}
