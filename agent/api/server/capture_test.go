package server

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/api"
	"github.com/sluicehq/sluice/agent/api/apitype"
	"github.com/sluicehq/sluice/agent/capture"
)

type capturingBackend struct {
	*fakeBackend
	taps capture.Taps
}

func (c *capturingBackend) Taps() *capture.Taps { return &c.taps }

var (
	appAddr = netip.MustParseAddrPort("10.10.0.2:41000")
	svcAddr = netip.MustParseAddrPort("10.10.0.1:15432")
)

// startCapture starts a capture and waits until the agent subscribed it.
func startCapture(t *testing.T, c *api.Client, b *capturingBackend, q api.CaptureQuery) *api.CaptureStream {
	t.Helper()
	s, err := c.Capture(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if !b.taps.Capturing() {
		t.Fatal("the capture answered before it was subscribed")
	}
	return s
}

func TestCaptureStreamsRecords(t *testing.T) {
	b := &capturingBackend{fakeBackend: &fakeBackend{}}
	c := serve(t, b)
	s := startCapture(t, c, b, api.CaptureQuery{Kind: apitype.CaptureDecrypted, Portal: "pg"})
	p := b.taps.NewPoint(capture.Decrypted, "pg", "bank", appAddr, svcAddr, true)
	b.taps.NewPoint(capture.Decrypted, "other", "bank", appAddr, svcAddr, true).Send([]byte("not this"))
	p.Send([]byte("SELECT 1")) // no Open seen: the first record brings it
	p.Receive([]byte("1"))
	p.End(true)
	want := []apitype.CaptureRecord{
		{Type: apitype.CaptureOpen, Conn: p.ID, Kind: "decrypted", Portal: "pg", Peer: "bank", Client: appAddr.String(), Server: svcAddr.String()},
		{Type: apitype.CaptureData, Conn: p.ID, FromClient: true, Data: []byte("SELECT 1")},
		{Type: apitype.CaptureData, Conn: p.ID, Data: []byte("1")},
		{Type: apitype.CaptureEnd, Conn: p.ID, Reset: true},
	}
	for i, w := range want {
		r, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		r.Time = time.Time{}
		if r.Type != w.Type || r.Conn != w.Conn || r.Kind != w.Kind || r.Portal != w.Portal || r.Peer != w.Peer ||
			r.Client != w.Client || r.Server != w.Server || r.FromClient != w.FromClient || string(r.Data) != string(w.Data) || r.Reset != w.Reset {
			t.Fatalf("record %d: %+v, want %+v", i, r, w)
		}
	}
	s.Close()
	if !waitFor(func() bool { return !b.taps.Capturing() }) {
		t.Fatal("the agent still captures after the client went away")
	}
}

// A capture that falls behind is told how many records it lost.
func TestCaptureReportsDropped(t *testing.T) {
	b := &capturingBackend{fakeBackend: &fakeBackend{}}
	c := serve(t, b)
	s := startCapture(t, c, b, api.CaptureQuery{Kind: apitype.CaptureWire})
	p := b.taps.NewPoint(capture.Wire, "pg", "bank", appAddr, svcAddr, true)
	chunk := make([]byte, 1024)
	for range 2 * capture.DefaultDepth { // nobody reads meanwhile: the socket and the queue fill up
		p.Send(chunk)
	}
	for {
		r, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if r.Type == apitype.CaptureDropped {
			if r.Dropped == 0 {
				t.Fatal("a dropped record that counts none")
			}
			return
		}
	}
}

func TestCaptureRefusals(t *testing.T) {
	ctx := context.Background()
	_, err := serve(t, &capturingBackend{fakeBackend: &fakeBackend{}}).Capture(ctx, api.CaptureQuery{Kind: "everything"})
	if err == nil || !strings.Contains(err.Error(), `capture kind "everything"`) {
		t.Fatalf("a capture of an unknown kind: %v", err)
	}
	_, err = serve(t, &fakeBackend{}).Capture(ctx, api.CaptureQuery{Kind: apitype.CaptureWire})
	if err == nil || !strings.Contains(err.Error(), "this agent has no capture") {
		t.Fatalf("a capture of an agent without one: %v", err)
	}
}

func waitFor(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}
