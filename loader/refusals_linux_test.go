package loader_test

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/maps"
)

// TestRefusalReasons checks that package maps numbers the reasons as the
// object does (enum refusal_reason in bpf/include/sluice.h).
func TestRefusalReasons(t *testing.T) {
	for got, want := range map[maps.RefusalReason]loader.TcRefusalReason{
		maps.RefusedSpoofed:    loader.TcRefusalReasonREFUSED_SPOOFED,
		maps.RefusedDenied:     loader.TcRefusalReasonREFUSED_DENIED,
		maps.RefusedNotAllowed: loader.TcRefusalReasonREFUSED_NOT_ALLOWED,
		maps.RefusedNotSteered: loader.TcRefusalReasonREFUSED_NOT_STEERED,
		maps.RefusedNoListener: loader.TcRefusalReasonREFUSED_NO_LISTENER,
	} {
		if uint32(got) != uint32(want) {
			t.Errorf("maps says %v is %d, the object %d", got, got, want)
		}
	}
}

// TestRefusalEvents checks that every refused SYN, and only a refused SYN,
// writes one event into the refusals ring, saying who was refused, from
// where, to which portal and why; segments the programs allow, refused data
// segments and resets write none, so that a flood of those costs the ring
// nothing.
func TestRefusalEvents(t *testing.T) {
	syn := func(from, to netip.AddrPort) seg { return seg{src: from, dst: to, syn: true, seq: 1000} }
	for _, tc := range []struct {
		name    string
		assign  bool // run assign (on the bridge) instead of steer
		pkt     seg
		ifindex uint32
		mark    uint32
		deny    bool
		want    *maps.Refusal
	}{
		{name: "allowed SYN", pkt: syn(app, svc), ifindex: appIdx},
		{name: "unknown workload", pkt: syn(stranger, svc), ifindex: otherIdx,
			want: &maps.Refusal{Client: stranger, Service: svc, Portal: portal, Ifindex: otherIdx, Reason: maps.RefusedNotAllowed}},
		{name: "denied service", pkt: syn(app, svc), ifindex: appIdx, deny: true,
			want: &maps.Refusal{Client: app, Service: svc, Portal: portal, Workload: appW, Ifindex: appIdx, Reason: maps.RefusedDenied}},
		{name: "spoofed source", pkt: syn(app, svc), ifindex: otherIdx,
			want: &maps.Refusal{Client: app, Service: svc, Portal: portal, Ifindex: otherIdx, Reason: maps.RefusedSpoofed}},
		{name: "explicit inlet, workload not allowed", pkt: syn(stranger, inletAddr), ifindex: vethIdx,
			want: &maps.Refusal{Client: stranger, Service: inletAddr, Portal: explicitPortal, Workload: vethW, Ifindex: vethIdx, Reason: maps.RefusedNotAllowed}},
		{name: "refused data segment", pkt: seg{src: stranger, dst: svc, ack: true, seq: 5, ackNum: 77, payload: "SELECT 1"}, ifindex: otherIdx},
		{name: "refused SYN-ACK", pkt: seg{src: stranger, dst: svc, syn: true, ack: true}, ifindex: otherIdx},
		{name: "reset", pkt: seg{src: stranger, dst: svc, rst: true}, ifindex: otherIdx},
		{name: "bridge: unmarked", assign: true, pkt: syn(app, svc),
			want: &maps.Refusal{Client: app, Service: svc, Portal: portal, Reason: maps.RefusedNotSteered}},
		{name: "bridge: no agent listening", assign: true, pkt: syn(app, svc), mark: loader.DefaultMark,
			want: &maps.Refusal{Client: app, Service: svc, Portal: portal, Reason: maps.RefusedNoListener}},
		{name: "bridge: denied service", assign: true, pkt: syn(app, svc), mark: loader.DefaultMark, deny: true,
			want: &maps.Refusal{Client: app, Service: svc, Portal: portal, Reason: maps.RefusedDenied}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, tc.deny)
			ring, err := maps.NewRefusals(&e.objs.TcMaps)
			if err != nil {
				t.Fatal(err)
			}
			defer ring.Close()
			prog := e.objs.Steer
			if tc.assign {
				prog = e.objs.Assign
			}
			e.run(t, prog, tc.pkt.bytes(t), tc.mark, tc.ifindex)
			got := drain(t, ring)
			switch {
			case tc.want == nil && len(got) != 0:
				t.Fatalf("events %+v, want none", got)
			case tc.want != nil && len(got) != 1:
				t.Fatalf("events %+v, want exactly one: %+v", got, *tc.want)
			case tc.want != nil && got[0] != *tc.want:
				t.Errorf("event %+v, want %+v", got[0], *tc.want)
			}
		})
	}
}

// drain reads what the ring holds now.
func drain(t *testing.T, ring *maps.Refusals) []maps.Refusal {
	t.Helper()
	ring.SetDeadline(time.Now())
	var out []maps.Refusal
	for {
		r, err := ring.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatalf("read refusals: %v", err)
		}
		out = append(out, r)
	}
}
