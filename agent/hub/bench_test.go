package hub_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/agent/internal/testhub"
)

// BenchmarkHub moves bytes through a hub on loopback, both agents' data
// connections in this process: bulk (256 KiB writes one way; MB/s) and
// 64-byte request/responses (ns/op is one round trip), with the hub
// splicing or relaying in the kernel. kernel-% is the share of the bytes
// the sockmap relay redirected without the hub copying them. The sockmap's
// backlog bound is lifted: on loopback the kernel worker falls behind a
// bulk sender by hundreds of MiB, and the default bound resets the
// session (TestDataOverflowResets).
//
//	go test -run '^$' -bench BenchmarkHub -count 5 ./agent/hub/
func BenchmarkHub(b *testing.B) {
	for _, mode := range []string{"splice", "sockmap"} {
		b.Run(mode, func(b *testing.B) {
			var opts hub.HubOptions
			if mode == "sockmap" {
				opts.Sockmap = openSockmap(b, hub.SockmapOptions{BacklogMax: 1 << 62})
			}
			h := testhub.Start(b, testhub.Options{Hub: opts})
			out, in := h.Enroll(b, nil, "svc"), h.Enroll(b, nil)
			sessions := answer(out)
			claim(b, out, "svc")
			open := func(b *testing.B) (inlet, outlet *net.TCPConn) {
				inlet, _ = dialData(b, in, "svc")
				outlet = next(b, sessions).conn
				for _, c := range []*net.TCPConn{inlet, outlet} {
					c.SetDeadline(time.Now().Add(time.Minute))
				}
				return inlet, outlet
			}
			b.Run("bulk", func(b *testing.B) { benchBulk(b, h, open) })
			b.Run("rr64", func(b *testing.B) { benchRoundTrip(b, h, open) })
		})
	}
}

func benchBulk(b *testing.B, h *testhub.Hub, open func(*testing.B) (*net.TCPConn, *net.TCPConn)) {
	const chunk = 256 << 10
	inlet, outlet := open(b)
	before := h.Relay().Stats()
	b.SetBytes(chunk)
	b.ResetTimer()
	go func() {
		buf := make([]byte, chunk)
		for range b.N {
			if _, err := inlet.Write(buf); err != nil {
				return
			}
		}
		inlet.CloseWrite()
	}()
	buf := make([]byte, chunk)
	var got int64
	for {
		n, err := outlet.Read(buf)
		got += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if got != int64(b.N)*chunk {
		b.Fatalf("outlet read %d bytes, want %d", got, int64(b.N)*chunk)
	}
	outlet.CloseWrite()
	closeSession(b, h, before, got, inlet, outlet)
}

func benchRoundTrip(b *testing.B, h *testhub.Hub, open func(*testing.B) (*net.TCPConn, *net.TCPConn)) {
	inlet, outlet := open(b)
	before := h.Relay().Stats()
	echoed := make(chan error, 1)
	go func() {
		buf := make([]byte, 64)
		for range b.N {
			if _, err := io.ReadFull(outlet, buf); err != nil {
				echoed <- err
				return
			}
			if _, err := outlet.Write(buf); err != nil {
				echoed <- err
				return
			}
		}
		echoed <- nil
	}()
	buf := make([]byte, 64)
	b.ResetTimer()
	for range b.N {
		if _, err := inlet.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(inlet, buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := <-echoed; err != nil {
		b.Fatal(err)
	}
	inlet.CloseWrite()
	outlet.CloseWrite()
	closeSession(b, h, before, int64(b.N)*128, inlet, outlet)
}

// closeSession waits for the hub to count the session's bytes and reports
// which share of them the kernel redirected.
func closeSession(b *testing.B, h *testhub.Hub, before hub.Stats, total int64, conns ...*net.TCPConn) {
	for _, c := range conns {
		io.Copy(io.Discard, c)
		c.Close()
	}
	if !testhub.WaitFor(wait, func() bool { return h.Relay().Stats().Spliced-before.Spliced >= total }) {
		b.Fatalf("the hub counted %d bytes of the %d the session carried", h.Relay().Stats().Spliced-before.Spliced, total)
	}
	st := h.Relay().Stats()
	b.ReportMetric(100*float64(st.Redirected-before.Redirected)/float64(st.Spliced-before.Spliced), "kernel-%")
}
