package hub_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/agent/internal/testhub"
)

// FuzzHubPreamble sends arbitrary first bytes to a real hub on loopback, as
// anyone who can reach its port may, then half-closes. The hub tells data
// connections ("SLD2" and a 32-byte token) from control ones (a TLS
// handshake) by those bytes. Whatever they are, the hub must not fall over,
// must answer nothing but a TLS handshake (no acknowledgement: no data
// session starts for a token it did not hand out), must leave alone the
// session that is waiting for its two connections, and must forget the
// connection once it ends (its count of unauthenticated connections falls
// back to zero).
func FuzzHubPreamble(f *testing.F) {
	h := testhub.Start(f, testhub.Options{Hub: hub.HubOptions{SessionTimeout: time.Hour}})
	out, in := h.Enroll(f, nil, "svc"), h.Enroll(f, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := out.Client.Claim(ctx, "svc"); err != nil {
		f.Fatal(err)
	}
	// A session waits for its connections: neither agent opens them.
	tok, _, err := in.Client.Dial(ctx, "svc")
	if err != nil {
		f.Fatal(err)
	}
	near := bytes.Clone(tok)
	near[31] ^= 1
	for _, seed := range [][]byte{
		{},
		[]byte("S"),
		[]byte("SLD"),
		[]byte("SLD2"),
		append([]byte("SLD2"), make([]byte, 32)...),
		append([]byte("SLD2"), near...),
		append(append([]byte("SLD2"), near...), "and more"...),
		append([]byte("SLD2"), near[:31]...),
		append([]byte("SLD1"), make([]byte, 32)...),
		{0x16, 3, 1, 0, 5, 1, 0, 0, 1, 0},
		[]byte("GET / HTTP/1.1\r\nHost: hub\r\n\r\n"),
		bytes.Repeat([]byte{0}, 100),
	} {
		f.Add(seed)
	}
	addr, err := net.ResolveTCPAddr("tcp", h.Addr)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		c, err := net.DialTCP("tcp", nil, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(15 * time.Second))
		c.Write(input) // the hub may have closed already
		c.CloseWrite()
		got, _ := io.ReadAll(c) // a reset after unread bytes is fine
		if len(input) == 0 || input[0] != 0x16 {
			if len(got) != 0 {
				t.Fatalf("first bytes %q: the hub answered %q, want nothing", input, got)
			}
		}
		c.Close()
		var st hub.Stats
		if !testhub.WaitFor(5*time.Second, func() bool { st = h.Relay().Stats(); return st.Unauthenticated == 0 }) {
			t.Fatalf("first bytes %q: %d unauthenticated connections left after it closed", input, st.Unauthenticated)
		}
		if st.Pending != 1 {
			t.Fatalf("first bytes %q: %d sessions pending, want the one waiting", input, st.Pending)
		}
	})
}
