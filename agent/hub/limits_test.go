package hub_test

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/pipe"
	"github.com/sluicehq/sluice/agent/relay"
)

// wireMessage is the part of a control message these tests read.
type wireMessage struct {
	ID    uint64 `json:"id"`
	Op    string `json:"op"`
	Error string `json:"error"`
	Code  string `json:"code"`
}

// control is a raw control connection: TLS with a node key (a member's, or
// a stranger's self-signed one), then lines of JSON.
type control struct {
	conn *tls.Conn
	r    *bufio.Reader
}

func dialControl(t testing.TB, addr string, id *identity.Identity) *control {
	t.Helper()
	if id == nil {
		var err error
		if id, err = identity.New(); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := id.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", addr, &tls.Config{
		MinVersion: tls.VersionTLS13, NextProtos: []string{"sluice-control/1"},
		Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, // the hub's identity is not what these tests check
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(wait))
	return &control{conn: conn, r: bufio.NewReader(conn)}
}

func (c *control) send(t testing.TB, line string) {
	t.Helper()
	if _, err := c.conn.Write([]byte(line + "\n")); err != nil {
		t.Fatal(err)
	}
}

// next reads the next message.
func (c *control) next(t testing.TB) wireMessage {
	t.Helper()
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		t.Fatalf("read a control message: %v (read %q)", err, line)
	}
	var m wireMessage
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("hub sent %q: %v", line, err)
	}
	return m
}

// present makes the connection a member session with the agent's current
// credential, and checks the hub took it.
func (c *control) present(t testing.TB, a *testhub.Agent) {
	t.Helper()
	line, err := json.Marshal(map[string]any{"id": 1, "op": "present", "credential": a.Keys.Get().Certificate[0]})
	if err != nil {
		t.Fatal(err)
	}
	c.send(t, string(line))
	if m := c.next(t); m.Error != "" {
		t.Fatalf("credential refused: %+v", m)
	}
}

// closed checks that the hub closed the connection, without another message.
func (c *control) closed(t testing.TB) {
	t.Helper()
	if line, err := c.r.ReadBytes('\n'); len(line) != 0 || (!errors.Is(err, io.EOF) && !pipe.IsReset(err)) {
		t.Errorf("after its refusal the hub sent %q, %v; want the connection closed", line, err)
	}
}

// TestOversizedMessageAfterAuth: a member's control message longer than
// the limit is refused with code too_large, and the hub closes the link.
func TestOversizedMessageAfterAuth(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	a := h.Enroll(t, nil)
	c := dialControl(t, h.Addr, a.Identity)
	c.present(t, a)
	// The hub may close before the whole message is written.
	go c.conn.Write([]byte(`{"id":2,"op":"claim","relay":"` + strings.Repeat("r", 100<<10) + `"}` + "\n"))
	m := c.next(t)
	if m.Op != "reply" || m.Code != "too_large" || !strings.Contains(m.Error, "65536 bytes") {
		t.Errorf("answer to a 100 KiB message: %+v; want a refusal with code too_large naming the limit", m)
	}
	c.closed(t)
	if n := h.Relay().Stats().Refused.TooLarge; n != 1 {
		t.Errorf("hub counted %d messages too large, want 1", n)
	}
}

// TestOversizedFirstMessage: the same before authentication, from a
// stranger's self-signed key: the hub reads no more than the limit.
func TestOversizedFirstMessage(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	c := dialControl(t, h.Addr, nil)
	go c.conn.Write([]byte(`{"id":1,"op":"enroll","ticket":"` + strings.Repeat("A", 1<<20)))
	m := c.next(t)
	if m.Code != "too_large" {
		t.Errorf("answer to an endless first message: %+v; want code too_large", m)
	}
	if st := h.Relay().Stats(); st.Refused.TooLarge != 1 || st.Sessions != 0 {
		t.Errorf("hub stats %+v: want 1 message too large and no session", st)
	}
}

func TestMalformedMessage(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	c := dialControl(t, h.Addr, nil)
	c.send(t, `hello hub`)
	if m := c.next(t); m.Code != "malformed" || !strings.Contains(m.Error, "malformed") {
		t.Errorf("answer to a line that is not JSON: %+v; want code malformed", m)
	}
	c.closed(t)
	if n := h.Relay().Stats().Refused.Malformed; n != 1 {
		t.Errorf("hub counted %d malformed messages, want 1", n)
	}
}

// TestClientRefusesOversized: the agent does not send what the hub would
// refuse; its link stays up.
func TestClientRefusesOversized(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	a := h.Enroll(t, nil)
	err := a.Client.Claim(t.Context(), strings.Repeat("r", 100<<10))
	if !errors.Is(err, relay.ErrMessageTooLarge) {
		t.Fatalf("claim of a 100 KiB relay name: %v, want ErrMessageTooLarge", err)
	}
	_, _, err = a.Client.Dial(t.Context(), "nobody")
	checkRefused(t, err, relay.ErrNoRelay, "nobody")
}

// silent opens a TCP connection from src to the hub and sends nothing.
func silent(t testing.TB, src, addr string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: wait}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(wait))
	return c.(*net.TCPConn)
}

// resetAtOnce opens a connection from src and checks that the hub resets
// it without waiting for a byte. On loopback the reset can come before
// connect(2) has reported success: a reset while dialing is the same.
func resetAtOnce(t testing.TB, src, addr, why string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: wait}
	c, err := d.Dial("tcp", addr)
	if err == nil {
		defer c.Close()
		c.SetDeadline(time.Now().Add(wait))
		_, err = c.Read(make([]byte, 1))
	}
	if !pipe.IsReset(err) {
		t.Errorf("%s: %v, want the hub's reset", why, err)
	}
}

func unauthenticated(h *testhub.Hub, n int) bool {
	return testhub.WaitFor(wait, func() bool { return h.Relay().Stats().Unauthenticated == n })
}

// TestUnauthenticatedCaps: connections that have not authenticated are
// capped per source and in all, with room kept for the sources members
// authenticated from; past a cap the hub resets new ones at once.
func TestUnauthenticatedCaps(t *testing.T) {
	// The reserved room holds a member's new connection: its control
	// connection and its exchange with the authority, both unauthenticated
	// until it presents its credential, and a data connection.
	limits := hub.Limits{Unauthenticated: 7, PerSource: 3, Reserved: 3}
	h := testhub.Start(t, testhub.Options{Hub: hub.HubOptions{Limits: limits, HelloTimeout: time.Minute, Logger: zaptest.NewLogger(t)}})
	// Members connect from 127.0.0.1, which the hub then keeps room for.
	out, in := h.Enroll(t, nil, "svc"), h.Enroll(t, nil)
	sessions := answer(out)
	claim(t, out, "svc")
	if !unauthenticated(h, 0) {
		t.Fatalf("hub counts %d unauthenticated connections after the enrollments, want 0", h.Relay().Stats().Unauthenticated)
	}

	for range 3 {
		silent(t, "127.0.0.2", h.Addr)
	}
	if !unauthenticated(h, 3) {
		t.Fatalf("hub counts %d unauthenticated connections, want 3", h.Relay().Stats().Unauthenticated)
	}
	resetAtOnce(t, "127.0.0.2", h.Addr, "a 4th silent connection from one source")
	silent(t, "127.0.0.3", h.Addr)
	if !unauthenticated(h, 4) {
		t.Fatalf("hub counts %d unauthenticated connections, want 4", h.Relay().Stats().Unauthenticated)
	}
	resetAtOnce(t, "127.0.0.3", h.Addr, "a silent connection from an unknown source past the unreserved room")

	// The reserved room: members' new data and control connections go on.
	conn, _ := dialData(t, in, "svc")
	s := next(t, sessions)
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s.conn, make([]byte, 4)); err != nil {
		t.Fatalf("a member's session while strangers hold the unreserved room: %v", err)
	}
	if _, err := h.Connect(t, testhub.AgentOptions{Identity: in.Identity}); err != nil {
		t.Fatalf("a member's new control connection while strangers hold the unreserved room: %v", err)
	}

	st := h.Relay().Stats()
	if st.Refused.PerSource != 1 || st.Refused.Unauthenticated != 1 {
		t.Errorf("hub refusals %+v, want 1 per source and 1 in all", st.Refused)
	}
	if st.UnauthenticatedPeak > limits.Unauthenticated || st.UnauthenticatedSourcePeak > limits.PerSource {
		t.Errorf("hub held %d unauthenticated connections at once, %d from one source; the caps are %d and %d",
			st.UnauthenticatedPeak, st.UnauthenticatedSourcePeak, limits.Unauthenticated, limits.PerSource)
	}
}

// TestMemberSourceCap: a source a member authenticated from has its own,
// larger, per-source cap.
func TestMemberSourceCap(t *testing.T) {
	limits := hub.Limits{Unauthenticated: 20, Reserved: 4, PerSource: 2, PerMemberSource: 4}
	h := testhub.Start(t, testhub.Options{Hub: hub.HubOptions{Limits: limits, HelloTimeout: time.Minute}})
	h.Enroll(t, nil) // from 127.0.0.1
	// Its exchange with the authority counts until the hub has closed it.
	if !unauthenticated(h, 0) {
		t.Fatalf("hub counts %d unauthenticated connections after the enrollment, want 0", h.Relay().Stats().Unauthenticated)
	}
	for range 4 {
		silent(t, "127.0.0.1", h.Addr)
	}
	for range 2 {
		silent(t, "127.0.0.2", h.Addr)
	}
	if !unauthenticated(h, 6) {
		t.Fatalf("hub counts %d unauthenticated connections, want 6", h.Relay().Stats().Unauthenticated)
	}
	resetAtOnce(t, "127.0.0.1", h.Addr, "a 5th silent connection from a member source")
	resetAtOnce(t, "127.0.0.2", h.Addr, "a 3rd silent connection from another source")
	if st := h.Relay().Stats(); st.Refused.PerSource != 2 || st.UnauthenticatedSourcePeak != 4 {
		t.Errorf("hub stats %+v: want 2 refusals per source, at most 4 from one source", st)
	}
}

// TestUnauthenticatedTimeout: a silent connection holds its place only for
// the hello timeout.
func TestUnauthenticatedTimeout(t *testing.T) {
	h := testhub.Start(t, testhub.Options{Hub: hub.HubOptions{HelloTimeout: 200 * time.Millisecond}})
	c := silent(t, "127.0.0.2", h.Addr)
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("a silent connection after the hello timeout: read %v, want EOF", err)
	}
	if !unauthenticated(h, 0) {
		t.Errorf("hub still counts %d unauthenticated connections", h.Relay().Stats().Unauthenticated)
	}
}
