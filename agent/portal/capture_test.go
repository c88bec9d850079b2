package portal_test

import (
	"bytes"
	"io"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/capture"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/portal"
)

// tapped is the standard pair with a capture.Taps on each agent.
type tapped struct {
	standard
	inTaps, outTaps capture.Taps
}

func newTapped(t *testing.T) *tapped {
	t.Helper()
	s := &tapped{}
	s.h = testhub.Start(t, testhub.Options{})
	s.tg = newTarget(t, bytes.ToUpper)
	s.out = newNode(t, s.h, portal.Options{Taps: &s.outTaps}, map[string]string{"web-outlet": "true"}, "web")
	s.out.outlet(t, portal.OutletSpec{Name: "web", To: s.tg.addr, Allow: "web-inlet"})
	s.in = newNode(t, s.h, portal.Options{Taps: &s.inTaps}, map[string]string{"web-inlet": "true"})
	s.inletAddr = s.in.inlet(t, portal.InletSpec{Name: "web", Via: "web", Allow: "web-outlet"})
	return s
}

// drain collects sub's records until the Point of kind ends.
func drain(t *testing.T, sub *capture.Sub) []capture.Record {
	t.Helper()
	var recs []capture.Record
	for {
		select {
		case r := <-sub.Records():
			recs = append(recs, r)
			if r.Type == capture.End {
				return recs
			}
		case <-time.After(wait):
			t.Fatalf("no end record after %d records", len(recs))
		}
	}
}

// joined is what a connection's records carried in one direction.
func joined(recs []capture.Record, fromClient bool) []byte {
	var b []byte
	for _, r := range recs {
		if r.Type == capture.Data && r.FromClient == fromClient {
			b = append(b, r.Data...)
		}
	}
	return b
}

// TestCaptureSeesPlaintextAndCiphertext: each side's decrypted capture
// shows the connection between its real ends with the bytes in the right
// direction, and the wire capture carries the same exchange sealed.
func TestCaptureSeesPlaintextAndCiphertext(t *testing.T) {
	s := newTapped(t)
	inPlain := s.inTaps.Subscribe(capture.Filter{Kind: capture.Decrypted, Portal: "web"}, 0)
	defer inPlain.Close()
	inWire := s.inTaps.Subscribe(capture.Filter{Kind: capture.Wire}, 0)
	defer inWire.Close()
	outPlain := s.outTaps.Subscribe(capture.Filter{Kind: capture.Decrypted, Peer: s.in.Identity.ID()}, 0)
	defer outPlain.Close()
	other := s.inTaps.Subscribe(capture.Filter{Portal: "not-this-one"}, 0)
	defer other.Close()

	app := dial(t, s.inletAddr)
	msg := []byte("select 'sluice capture marker'")
	got, err := roundTrip(app, msg)
	if err != nil || !bytes.Equal(got, bytes.ToUpper(msg)) {
		t.Fatalf("round trip: %q, %v", got, err)
	}

	recs := drain(t, inPlain)
	p := recs[0].Point
	if recs[0].Type != capture.Open || p.Client != netip.MustParseAddrPort(app.LocalAddr().String()) || p.Server != netip.MustParseAddrPort(s.inletAddr) || p.Peer != s.out.Identity.ID() {
		t.Fatalf("inlet's capture: first record %+v of %+v, want the open of app %s to inlet %s with peer %s", recs[0], p, app.LocalAddr(), s.inletAddr, s.out.Identity.ID())
	}
	if up, down := joined(recs, true), joined(recs, false); !bytes.Equal(up, msg) || !bytes.Equal(down, bytes.ToUpper(msg)) {
		t.Fatalf("inlet's capture carried %q up and %q down", up, down)
	}
	if end := recs[len(recs)-1]; end.Reset {
		t.Fatal("a clean connection ended in a reset in the capture")
	}

	recs = drain(t, outPlain)
	p = recs[0].Point
	if p.Server != netip.MustParseAddrPort(s.tg.addr) || p.Portal != "web" {
		t.Fatalf("outlet's capture: %+v, want a connection to the target %s", p, s.tg.addr)
	}
	if up, down := joined(recs, true), joined(recs, false); !bytes.Equal(up, msg) || !bytes.Equal(down, bytes.ToUpper(msg)) {
		t.Fatalf("outlet's capture carried %q up and %q down", up, down)
	}

	// The wire: records both ways, sealed. The channel stays warm, so
	// there is no end to wait for.
	var wire []capture.Record
	for len(inWire.Records()) > 0 {
		wire = append(wire, <-inWire.Records())
	}
	up, down := joined(wire, true), joined(wire, false)
	if len(up) <= len(msg) || len(down) <= len(msg) {
		t.Fatalf("wire capture: %d bytes up, %d down; want more than the %d of plaintext each way", len(up), len(down), len(msg))
	}
	if bytes.Contains(up, msg) || bytes.Contains(down, bytes.ToUpper(msg)) {
		t.Fatal("the wire capture holds the plaintext")
	}
	if wp := wire[0].Point; wp.Kind != capture.Wire || wp.Portal != "web" || !wp.Server.IsValid() {
		t.Fatalf("wire capture's connection: %+v", wp)
	}
	if n := len(other.Records()); n != 0 {
		t.Fatalf("a capture of another portal got %d records", n)
	}
}

// TestStalledCaptureDoesNotStallPortal: a capture whose reader never reads
// loses records; the portal carries every byte as if nobody captured.
func TestStalledCaptureDoesNotStallPortal(t *testing.T) {
	s := newTapped(t)
	stuck := s.inTaps.Subscribe(capture.Filter{}, 1)
	defer stuck.Close()
	stuckOut := s.outTaps.Subscribe(capture.Filter{}, 1)
	defer stuckOut.Close()
	msg := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
	got, err := roundTrip(dial(t, s.inletAddr), msg)
	if err != nil || !bytes.Equal(got, bytes.ToUpper(msg)) {
		t.Fatalf("round trip under a stalled capture: %d of %d bytes, %v", len(got), len(msg), err)
	}
	if stuck.Dropped() == 0 || stuckOut.Dropped() == 0 {
		t.Fatalf("dropped %d and %d records; a one-record queue must have dropped", stuck.Dropped(), stuckOut.Dropped())
	}
}

// BenchmarkThroughputTaps is BenchmarkThroughput's portal with taps on both
// agents: "idle" while nobody captures (what every agent pays), and
// "capturing" with a decrypted and a wire capture on each agent whose
// readers keep up.
func BenchmarkThroughputTaps(b *testing.B) {
	for _, capturing := range []bool{false, true} {
		name := "idle"
		if capturing {
			name = "capturing"
		}
		b.Run(name, func(b *testing.B) {
			srv := newBenchServer(b, false)
			var inTaps, outTaps capture.Taps
			h := testhub.Start(b, testhub.Options{})
			out := newNode(b, h, portal.Options{Logger: zap.NewNop(), Taps: &outTaps}, map[string]string{"web-outlet": "true"}, "web")
			out.outlet(b, portal.OutletSpec{Name: "web", To: srv.addr, Allow: "web-inlet"})
			in := newNode(b, h, portal.Options{Logger: zap.NewNop(), Taps: &inTaps}, map[string]string{"web-inlet": "true"})
			addr := in.inlet(b, portal.InletSpec{Name: "web", Via: "web", Allow: "web-outlet"})
			var dropped []*capture.Sub
			if capturing {
				for _, taps := range []*capture.Taps{&inTaps, &outTaps} {
					for _, k := range []capture.Kind{capture.Decrypted, capture.Wire} {
						sub := taps.Subscribe(capture.Filter{Kind: k}, 0)
						dropped = append(dropped, sub)
						done := make(chan struct{})
						go func() {
							for {
								select {
								case <-sub.Records():
								case <-done:
									return
								}
							}
						}()
						b.Cleanup(func() { close(done); sub.Close() })
					}
				}
			}
			c := dialBench(b, addr)
			buf := make([]byte, 128<<10)
			buf[0] = 's'
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			start := cpuTime()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			c.CloseWrite()
			var n [8]byte
			if _, err := io.ReadFull(c, n[:]); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			reportCPU(b, start)
			var d uint64
			for _, s := range dropped {
				d += s.Dropped()
			}
			b.ReportMetric(float64(d)/float64(b.N), "dropped/op")
		})
	}
}
