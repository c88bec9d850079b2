package hub_test

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/pipe"
	"github.com/sluicehq/sluice/agent/relay"
	"github.com/sluicehq/sluice/agent/wire"
)

// incoming is a data session an outlet agent was told about and opened.
type incoming struct {
	relay.Incoming
	conn *net.TCPConn
	err  error
}

// answer makes a open a data connection for every incoming session and
// hands it to the returned channel.
func answer(a *testhub.Agent) <-chan incoming {
	ch := make(chan incoming, 16)
	a.OnIncoming(func(in relay.Incoming) {
		c, err := a.Client.OpenData(context.Background(), in.Token)
		ch <- incoming{in, c, err}
	})
	return ch
}

func next(t testing.TB, ch <-chan incoming) incoming {
	t.Helper()
	select {
	case in := <-ch:
		if in.err != nil {
			t.Fatalf("open data connection for incoming session: %v", in.err)
		}
		t.Cleanup(func() { in.conn.Close() })
		in.conn.SetDeadline(time.Now().Add(wait))
		return in
	case <-time.After(wait):
		t.Fatal("no incoming session")
		return incoming{}
	}
}

// dialData asks the hub for a session to relay and opens its data connection.
func dialData(t testing.TB, a *testhub.Agent, relayName string) (conn *net.TCPConn, owner string) {
	t.Helper()
	tok, owner, err := a.Client.Dial(t.Context(), relayName)
	if err != nil {
		t.Fatalf("dial relay %s: %v", relayName, err)
	}
	if len(tok) != 32 {
		t.Errorf("token of %d bytes, want 32", len(tok))
	}
	conn, err = a.Client.OpenData(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(wait))
	return conn, owner
}

func claim(t testing.TB, a *testhub.Agent, name string) {
	t.Helper()
	if err := a.Client.Claim(t.Context(), name); err != nil {
		t.Fatalf("claim %s: %v", name, err)
	}
}

func relaysOf(h *testhub.Hub) []string {
	r := h.Relay().Stats().Relays
	slices.Sort(r)
	return r
}

func TestClaimRelayNotAllowed(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	a := h.Enroll(t, nil, "web")
	err := a.Client.Claim(t.Context(), "db")
	checkRefused(t, err, wire.ErrRelayNotAllowed, "--relay db")
	claim(t, a, "web")
	if got := a.Client.Status().Relays; !slices.Equal(got, []string{"web"}) {
		t.Errorf("client claims %v, want [web]", got)
	}
	if got := relaysOf(h); !slices.Equal(got, []string{"web"}) {
		t.Errorf("hub relays %v, want [web]", got)
	}
}

// TestClaimRelayReplicas: two nodes whose tickets name a relay both
// claim it (replicas, hub_replicas.go); a node that releases it is no
// longer dialed.
func TestClaimRelayReplicas(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	first, second := h.Enroll(t, nil, "db"), h.Enroll(t, nil, "db")
	claim(t, first, "db")
	claim(t, second, "db")
	// Claiming again is harmless for the owner.
	claim(t, first, "db")
	if got := h.Relay().Stats().Replicas["db"]; len(got) != 2 {
		t.Errorf("replicas of db %+v, want both nodes", got)
	}

	if err := first.Client.Release(t.Context(), "db"); err != nil {
		t.Fatal(err)
	}
	if got := first.Client.Status().Relays; len(got) != 0 {
		t.Errorf("client still claims %v after Release", got)
	}
	for range 3 {
		_, owner, err := first.Client.Dial(t.Context(), "db")
		if err != nil {
			t.Fatal(err)
		}
		if owner != second.Identity.ID() {
			t.Errorf("relay db is owned by %s, want the second node %s", owner, second.Identity.ID())
		}
	}
}

func TestDialUnclaimedRelay(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	a := h.Enroll(t, nil)
	_, _, err := a.Client.Dial(t.Context(), "nobody")
	checkRefused(t, err, relay.ErrNoRelay, `"nobody"`)
}

func TestOwnerDisconnectDropsRelay(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	owner, dialer := h.Enroll(t, nil, "svc"), h.Enroll(t, nil)
	claim(t, owner, "svc")
	owner.Stop()
	if !testhub.WaitFor(wait, func() bool { return len(relaysOf(h)) == 0 }) {
		t.Fatalf("hub still has relays %v after their owner left", relaysOf(h))
	}
	_, _, err := dialer.Client.Dial(t.Context(), "svc")
	checkRefused(t, err, relay.ErrNoRelay, "svc")
}

// TestDataSession: the hub matches the inlet's and the outlet's data
// connections by token and moves bytes both ways, half-closes included.
func TestDataSession(t *testing.T) {
	relayModes(t, func(t *testing.T, hub hub.HubOptions) {
		h := testhub.Start(t, testhub.Options{Hub: hub})
		out, in := h.Enroll(t, nil, "svc"), h.Enroll(t, nil)
		sessions := answer(out)
		claim(t, out, "svc")

		inConn, owner := dialData(t, in, "svc")
		if owner != out.Identity.ID() {
			t.Errorf("hub says the owner is %s, want %s", owner, out.Identity.ID())
		}
		s := next(t, sessions)
		if s.Relay != "svc" || s.From != in.Identity.ID() {
			t.Errorf("incoming %+v, want relay svc from %s", s.Incoming, in.Identity.ID())
		}
		st := h.Relay().Stats()
		if !slices.Equal(st.Relays, []string{"svc"}) || st.Sessions != 2 {
			t.Errorf("hub stats %+v, want relay svc and 2 sessions", st)
		}

		request, reply := []byte("hello outlet"), []byte("hello inlet, and goodbye")
		if _, err := inConn.Write(request); err != nil {
			t.Fatal(err)
		}
		if err := inConn.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(s.conn)
		if err != nil || string(got) != string(request) {
			t.Fatalf("outlet read %q, %v; want %q then EOF", got, err, request)
		}
		if _, err := s.conn.Write(reply); err != nil {
			t.Fatalf("outlet write after the inlet's FIN: %v", err)
		}
		s.conn.Close()
		got, err = io.ReadAll(inConn)
		if err != nil || string(got) != string(reply) {
			t.Fatalf("inlet read %q, %v; want %q then EOF", got, err, reply)
		}
		inConn.Close()
		total := int64(len(request) + len(reply))
		if !testhub.WaitFor(wait, func() bool { return h.Relay().Stats().Spliced == total }) {
			t.Errorf("hub spliced %d bytes, want %d", h.Relay().Stats().Spliced, total)
		}
		// With the sockmap, no byte crossed the hub's user space.
		if st := h.Relay().Stats(); hub.Sockmap != nil && (st.Redirected != total || st.Relay != "sockmap") {
			t.Errorf("hub stats %+v: want all %d bytes redirected by the kernel", st, total)
		}
		if p := h.Relay().Stats().Pending; p != 0 {
			t.Errorf("%d sessions pending after the match", p)
		}
	})
}

// TestDataSessionConcurrent runs several sessions to one relay at once; each
// inlet connection must meet its own outlet connection.
func TestDataSessionConcurrent(t *testing.T) {
	relayModes(t, func(t *testing.T, hub hub.HubOptions) {
		const n = 8
		h := testhub.Start(t, testhub.Options{Hub: hub})
		out, in := h.Enroll(t, nil, "svc"), h.Enroll(t, nil)
		// The outlet echoes whatever arrives, so a mismatched pair shows as a
		// wrong answer.
		out.OnIncoming(func(s relay.Incoming) {
			c, err := out.Client.OpenData(context.Background(), s.Token)
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(wait))
			io.Copy(c, c)
		})
		claim(t, out, "svc")
		errc := make(chan error, n)
		for i := range n {
			conn, _ := dialData(t, in, "svc")
			go func() {
				msg := []byte{byte('a' + i), byte('a' + i), byte('a' + i)}
				if _, err := conn.Write(msg); err != nil {
					errc <- err
					return
				}
				conn.CloseWrite()
				got, err := io.ReadAll(conn)
				if err == nil && string(got) != string(msg) {
					err = errors.New("session " + string(msg) + " got " + string(got))
				}
				errc <- err
			}()
		}
		for range n {
			if err := <-errc; err != nil {
				t.Error(err)
			}
		}
	})
}

func TestDataUnknownTokenClosed(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	c := dataConn(t, h, "SLD2", nil)
	if _, err := c.Write([]byte("payload")); err != nil {
		t.Fatal(err)
	}
	// The hub closes the connection: EOF, or a reset because the payload
	// was never read.
	got, err := io.ReadAll(c)
	if len(got) != 0 || (err != nil && !pipe.IsReset(err)) {
		t.Errorf("read %q, %v from a data connection with an unknown token; want it closed", got, err)
	}
}

// TestDataOldProtocolClosed: an agent of the protocol before the ack
// ("SLD1") is refused even with a valid token, which stays usable.
func TestDataOldProtocolClosed(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	c := dataConn(t, h, "SLD1", unanswered(t, h))
	// EOF, or a reset because the token was never read.
	if got, err := io.ReadAll(c); len(got) != 0 || (err != nil && !pipe.IsReset(err)) {
		t.Errorf("read %q, %v from an SLD1 data connection; want it closed", got, err)
	}
	if p := h.Relay().Stats().Pending; p != 1 {
		t.Errorf("%d sessions pending, want the one whose token an SLD1 agent presented", p)
	}
}

// unanswered asks h for a data session to a relay whose owner never opens
// its side, and returns the inlet's token.
func unanswered(t *testing.T, h *testhub.Hub) []byte {
	t.Helper()
	out, in := h.Enroll(t, nil, "silent"), h.Enroll(t, nil)
	out.OnIncoming(func(relay.Incoming) {})
	claim(t, out, "silent")
	tok, _, err := in.Client.Dial(t.Context(), "silent")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// dataConn opens a raw data connection that presents magic and tok (random
// if nil), and does not wait for the ack.
func dataConn(t *testing.T, h *testhub.Hub, magic string, tok []byte) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", h.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(wait))
	if tok == nil {
		tok = make([]byte, 32)
		rand.Read(tok)
	}
	if _, err := c.Write(append([]byte(magic), tok...)); err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn)
}

func TestUnknownProtocolClosed(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	c, err := net.Dial("tcp", h.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if len(got) != 0 || (err != nil && !pipe.IsReset(err)) {
		t.Errorf("read %q, %v from a non-sluice connection; want it closed", got, err)
	}
}

// TestDataPeerNeverComes: an inlet's data connection waits for the outlet's
// for SessionTimeout, then the hub closes it and OpenData says so.
func TestDataPeerNeverComes(t *testing.T) {
	const timeout = 300 * time.Millisecond
	h := testhub.Start(t, testhub.Options{Hub: hub.HubOptions{SessionTimeout: timeout}})
	out, in := h.Enroll(t, nil, "svc"), h.Enroll(t, nil)
	told := make(chan relay.Incoming, 1)
	out.OnIncoming(func(s relay.Incoming) { told <- s }) // and never opens it
	claim(t, out, "svc")

	start := time.Now()
	tok, _, err := in.Client.Dial(t.Context(), "svc")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := in.Client.OpenData(t.Context(), tok)
	if !errors.Is(err, relay.ErrNoSession) {
		conn.Close()
		t.Errorf("OpenData for a session whose peer never came: %v, want ErrNoSession", err)
	}
	select {
	case <-told:
	case <-time.After(wait):
		t.Fatal("the outlet agent was not told of the session")
	}
	if elapsed := time.Since(start); elapsed < timeout {
		t.Errorf("the hub closed the session after %v, before its timeout %v", elapsed, timeout)
	}
	if !testhub.WaitFor(wait, func() bool { return h.Relay().Stats().Pending == 0 }) {
		t.Errorf("%d sessions still pending", h.Relay().Stats().Pending)
	}
}

// TestOpenDataGivesUp: OpenData returns when its context ends, however long
// the session's other side takes.
func TestOpenDataGivesUp(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	in := h.Enroll(t, nil)
	tok := unanswered(t, h)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	conn, err := in.Client.OpenData(ctx, tok)
	if !errors.Is(err, context.DeadlineExceeded) {
		if conn != nil {
			conn.Close()
		}
		t.Errorf("OpenData past its deadline: %v, want context.DeadlineExceeded", err)
	}
}

func TestNotConnected(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	a := h.Enroll(t, nil)
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}
	if !testhub.WaitFor(wait, func() bool { return !a.Client.Status().Connected }) {
		t.Fatal("client still connected after the hub stopped")
	}
	_, _, err := a.Client.Dial(t.Context(), "svc")
	if !errors.Is(err, relay.ErrNotConnected) {
		t.Errorf("Dial without a hub: %v, want ErrNotConnected", err)
	}
	if st := a.Client.Status(); st.LastError == "" {
		t.Errorf("status %+v has no last error", st)
	}
}

// TestReconnectReclaims: after the hub restarts, the client reconnects with a
// hello, gets a fresh credential and claims its relay names again.
func TestReconnectReclaims(t *testing.T) {
	relayModes(t, func(t *testing.T, hub hub.HubOptions) {
		h := testhub.Start(t, testhub.Options{Hub: hub})
		out, in := h.Enroll(t, nil, "svc"), h.Enroll(t, nil)
		sessions := answer(out)
		claim(t, out, "svc")
		before, inBefore := out.Client.Status().Since, in.Client.Status().Since

		h.Restart(t)
		if !testhub.WaitFor(wait, func() bool { return slices.Equal(relaysOf(h), []string{"svc"}) }) {
			t.Fatalf("relay svc not claimed again after the restart; hub relays %v, client %+v", relaysOf(h), out.Client.Status())
		}
		if _, err := out.NextGrant(wait); err != nil {
			t.Errorf("no credential on reconnection: %v", err)
		}
		if st := out.Client.Status(); !st.Connected || !st.Since.After(before) || !slices.Equal(st.Relays, []string{"svc"}) {
			t.Errorf("status %+v, want connected since after %v, claiming svc", st, before)
		}
		if !testhub.WaitFor(wait, func() bool { st := in.Client.Status(); return st.Connected && st.Since.After(inBefore) }) {
			t.Fatalf("the other client did not reconnect: %+v", in.Client.Status())
		}
		conn, _ := dialData(t, in, "svc")
		s := next(t, sessions)
		if _, err := conn.Write([]byte("after restart")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len("after restart"))
		if _, err := io.ReadFull(s.conn, buf); err != nil || string(buf) != "after restart" {
			t.Errorf("outlet read %q, %v", buf, err)
		}
	})
}
