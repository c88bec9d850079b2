package hub_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/pipe"
)

// session opens a data session through h: the inlet's connection and the
// outlet's.
func session(t testing.TB, h *testhub.Hub) (inlet, outlet *net.TCPConn) {
	t.Helper()
	out, in := h.Enroll(t, nil, "svc"), h.Enroll(t, nil)
	sessions := answer(out)
	claim(t, out, "svc")
	inlet, _ = dialData(t, in, "svc")
	return inlet, next(t, sessions).conn
}

// TestDataReset: a reset from one agent reaches the other as a reset, after
// the bytes both sent before it.
func TestDataReset(t *testing.T) {
	relayModes(t, func(t *testing.T, hub hub.HubOptions) {
		inlet, outlet := session(t, testhub.Start(t, testhub.Options{Hub: hub}))
		for _, c := range []struct{ from, to *net.TCPConn }{{inlet, outlet}, {outlet, inlet}} {
			if _, err := c.from.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c.to, make([]byte, 4)); err != nil {
				t.Fatal(err)
			}
		}
		pipe.TCP(outlet).Abort()
		if _, err := io.ReadAll(inlet); !pipe.IsReset(err) {
			t.Errorf("the inlet's connection ended with %v after the outlet's reset, want a reset", err)
		}
	})
}

// pattern is n bytes of big-endian counters from start, so that a lost,
// repeated or reordered byte shows.
func pattern(n int, start uint32) []byte {
	b := make([]byte, n)
	for i := 0; i+4 <= n; i += 4 {
		binary.BigEndian.PutUint32(b[i:], start+uint32(i/4))
	}
	return b
}

// TestDataBulk: large transfers both ways at once, to a reader that starts
// late (with the sockmap: more than the kernel may queue for it, so the
// hub takes part of it), arrive whole and in order, and half-close cleanly.
func TestDataBulk(t *testing.T) {
	relayModes(t, func(t *testing.T, hub hub.HubOptions) {
		h := testhub.Start(t, testhub.Options{Hub: hub})
		inlet, outlet := session(t, h)
		inlet.SetDeadline(time.Now().Add(30 * time.Second))
		outlet.SetDeadline(time.Now().Add(30 * time.Second))
		up, down := pattern(48<<20, 0), pattern(16<<20, 1<<30)
		errc := make(chan error, 2)
		for _, c := range []struct {
			conn *net.TCPConn
			b    []byte
		}{{inlet, up}, {outlet, down}} {
			go func() {
				_, err := c.conn.Write(c.b)
				errc <- errors.Join(err, c.conn.CloseWrite())
			}()
		}
		gotDown := make(chan []byte, 1)
		go func() { b, _ := io.ReadAll(inlet); gotDown <- b }()
		time.Sleep(300 * time.Millisecond) // the outlet reads late
		gotUp, err := io.ReadAll(outlet)
		if err != nil || !bytes.Equal(gotUp, up) {
			t.Fatalf("outlet read %d bytes (%v), not the %d the inlet sent, in order", len(gotUp), err, len(up))
		}
		if b := <-gotDown; !bytes.Equal(b, down) {
			t.Fatalf("inlet read %d bytes, not the %d the outlet sent, in order", len(b), len(down))
		}
		if err := errors.Join(<-errc, <-errc); err != nil {
			t.Fatal(err)
		}
		inlet.Close()
		outlet.Close()
		total := int64(len(up) + len(down))
		if !testhub.WaitFor(wait, func() bool { return h.Relay().Stats().Spliced == total }) {
			t.Errorf("hub relayed %d bytes, want %d", h.Relay().Stats().Spliced, total)
		}
		st := h.Relay().Stats()
		t.Logf("%s: %d of %d bytes redirected by the kernel", st.Relay, st.Redirected, st.Spliced)
	})
}

// TestDataOverflowResets: with the sockmap, an outlet that does not read
// lets the inlet's bytes pile up in the hub's kernel (redirects have no
// backpressure) until the bound, when the hub resets the session. The hub
// learns of the overflow after the fact (bpf/relay.c reports it, user space
// resets), so the inlet keeps writing until its writes fail.
func TestDataOverflowResets(t *testing.T) {
	h := testhub.Start(t, testhub.Options{Hub: hub.HubOptions{Sockmap: openSockmap(t, hub.SockmapOptions{BacklogMax: 4 << 20})}})
	inlet, _ := session(t, h)
	inlet.SetWriteDeadline(time.Now().Add(wait))
	chunk := make([]byte, 1<<20)
	var err error
	for sent := 0; err == nil && sent < 1<<32; sent += len(chunk) {
		_, err = inlet.Write(chunk)
	}
	if !pipe.IsReset(err) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("the inlet's writes to an outlet that does not read ended with %v, want a reset", err)
	}
	if st := h.Relay().Stats(); !testhub.WaitFor(wait, func() bool { return h.Relay().Stats().Redirected > 4<<20 }) {
		t.Errorf("hub stats %+v: want the session's redirected bytes counted", st)
	}
}
