package loader_test

import (
	"net/netip"
	"testing"

	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/maps"
)

var (
	svc      = ap("10.200.0.10:5432")
	app      = ap("10.10.0.2:40000")
	stranger = ap("10.10.0.3:40001")
)

const (
	portal   = 7
	appW     = 3 // the app's workload number
	appIdx   = 41
	vethIdx  = 42
	vethW    = 4 // a workload named by its veth
	otherIdx = 43

	explicitPortal = 8 // an explicit inlet with --allow-local
)

// inletAddr is an explicit inlet's listen address on the host (the bridge's).
var inletAddr = ap("10.10.0.1:15432")

// setup gives the table tests one service, the app allowed by its address
// bound to its veth appIdx, anything behind veth vethIdx allowed by
// interface, and an explicit inlet's address allowed to the app only.
func setup(t *testing.T, deny bool) *progEnv {
	e := newProgEnv(t)
	m := e.maps
	if err := m.Services.Put(maps.Service{Addr: svc, Portal: portal, Deny: deny},
		maps.Service{Addr: inletAddr, Portal: explicitPortal, Explicit: true}); err != nil {
		t.Fatal(err)
	}
	if err := m.Endpoints.Replace(map[maps.Endpoint]uint32{
		{Ifindex: appIdx, Addr: app.Addr()}: appW,
		{Ifindex: vethIdx}:                  vethW,
	}); err != nil {
		t.Fatal(err)
	}
	if err := m.Bindings.Replace(map[netip.Addr]uint32{app.Addr(): appIdx}); err != nil {
		t.Fatal(err)
	}
	if err := m.Verdicts.Replace([]maps.Verdict{{Workload: appW, Portal: portal}, {Workload: vethW, Portal: portal},
		{Workload: appW, Portal: explicitPortal}}); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestSteer(t *testing.T) {
	syn := func(from netip.AddrPort) seg { return seg{src: from, dst: svc, syn: true, seq: 1000} }
	for _, tc := range []struct {
		name    string
		pkt     seg
		ifindex uint32
		deny    bool
		want    uint32
		reset   bool // the packet comes back as a reset
		refused uint64
		spoofed uint64
		packets uint64
	}{
		{name: "not IPv4", pkt: seg{arp: true}, want: actUnspec},
		{name: "TCP not to a service", pkt: seg{src: app, dst: ap("10.200.0.10:5433"), syn: true}, want: actUnspec},
		{name: "TCP to another address", pkt: seg{src: app, dst: ap("10.20.0.2:5432"), syn: true}, want: actUnspec},
		{name: "allowed SYN by address on its interface", pkt: syn(app), ifindex: appIdx, want: actOK, packets: 1},
		{name: "allowed SYN by interface", pkt: syn(stranger), ifindex: vethIdx, want: actOK, packets: 1},
		{name: "unknown workload refused", pkt: syn(stranger), ifindex: otherIdx, want: actRedirect, reset: true, refused: 1},
		{name: "denied service refuses the allowed", pkt: syn(app), ifindex: appIdx, deny: true, want: actRedirect, reset: true, refused: 1},
		{name: "data from a refused workload", pkt: seg{src: stranger, dst: svc, ack: true, seq: 5, ackNum: 77, payload: "SELECT 1"}, want: actRedirect, reset: true, refused: 1},
		{name: "a reset is never answered", pkt: seg{src: stranger, dst: svc, rst: true}, want: actShot},
		// Anti-spoofing: the app's address from any other interface.
		{name: "spoofed SYN from another veth", pkt: syn(app), ifindex: otherIdx, want: actRedirect, reset: true, refused: 1, spoofed: 1},
		{name: "spoofed SYN from a veth allowed by interface", pkt: syn(app), ifindex: vethIdx, want: actRedirect, reset: true, refused: 1, spoofed: 1},
		{name: "spoofed data segment", pkt: seg{src: app, dst: svc, ack: true, seq: 5, ackNum: 77, payload: "SELECT 1"}, ifindex: otherIdx, want: actRedirect, reset: true, refused: 1, spoofed: 1},
		{name: "spoofed reset is dropped, not answered", pkt: seg{src: app, dst: svc, rst: true}, ifindex: otherIdx, want: actShot},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, tc.deny)
			in := tc.pkt.bytes(t)
			ret, out, mark := e.run(t, e.objs.Steer, in, 0, tc.ifindex)
			if ret != tc.want {
				t.Fatalf("verdict %d, want %d", int32(ret), int32(tc.want))
			}
			if tc.want == actOK && mark != loader.DefaultMark {
				t.Errorf("mark %#x, want %#x", mark, loader.DefaultMark)
			}
			if tc.want == actUnspec && mark != 0 {
				t.Errorf("untouched packet got mark %#x", mark)
			}
			if tc.reset {
				r := decodeReset(t, out, tc.pkt.dst, tc.pkt.src)
				if tc.pkt.ack {
					if r.Seq != tc.pkt.ackNum || r.ACK {
						t.Errorf("reset to a segment with ACK: seq %d ack flag %v, want seq %d and no ACK", r.Seq, r.ACK, tc.pkt.ackNum)
					}
				} else if !r.ACK || r.Ack != tc.pkt.seq+1 {
					t.Errorf("reset to a SYN: ack %d (flag %v), want %d", r.Ack, r.ACK, tc.pkt.seq+1)
				}
			}
			c, err := e.maps.Counters.Read(portal)
			if err != nil {
				t.Fatal(err)
			}
			if c.Refused != tc.refused || c.Spoofed != tc.spoofed || c.Packets != tc.packets {
				t.Errorf("counters %+v, want refused %d spoofed %d packets %d", c, tc.refused, tc.spoofed, tc.packets)
			}
			if tc.packets > 0 && c.Bytes != uint64(len(in)) {
				t.Errorf("bytes %d, want %d", c.Bytes, len(in))
			}
		})
	}
}

// TestSteerRecordsFlow checks that an allowed SYN says who opened it.
func TestSteerRecordsFlow(t *testing.T) {
	e := setup(t, false)
	if ret, _, _ := e.run(t, e.objs.Steer, seg{src: stranger, dst: svc, syn: true}.bytes(t), 0, vethIdx); ret != actOK {
		t.Fatalf("verdict %d", int32(ret))
	}
	fl, ok, err := e.maps.Flows.Take(stranger, svc)
	if err != nil || !ok {
		t.Fatalf("flow not recorded: ok %v err %v", ok, err)
	}
	if fl.Workload != vethW || fl.Ifindex != vethIdx {
		t.Errorf("flow %+v, want workload %d on ifindex %d", fl, vethW, vethIdx)
	}
	if _, ok, _ := e.maps.Flows.Take(stranger, svc); ok {
		t.Error("Take did not forget the flow")
	}
}

// TestExplicitService checks an explicit inlet's entry: steer refuses
// spoofers and workloads --allow-local does not permit, and passes the
// allowed unmarked (the host stack delivers them to the inlet's listener),
// with the flow recorded for the agent; assign leaves it all alone.
func TestExplicitService(t *testing.T) {
	syn := func(from netip.AddrPort) seg { return seg{src: from, dst: inletAddr, syn: true, seq: 1000} }
	for _, tc := range []struct {
		name             string
		pkt              seg
		ifindex          uint32
		want             uint32
		refused, spoofed uint64
		flow             bool // a flow is recorded for the agent
	}{
		{name: "allowed workload passes unmarked", pkt: syn(app), ifindex: appIdx, want: actOK, flow: true},
		{name: "another workload refused", pkt: syn(stranger), ifindex: vethIdx, want: actRedirect, refused: 1},
		{name: "unknown container refused", pkt: syn(stranger), ifindex: otherIdx, want: actRedirect, refused: 1},
		{name: "the app's address spoofed from another veth", pkt: syn(app), ifindex: otherIdx, want: actRedirect, refused: 1, spoofed: 1},
		{name: "another port of the host is not ours", pkt: seg{src: stranger, dst: ap("10.10.0.1:22"), syn: true}, ifindex: otherIdx, want: actUnspec},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, false)
			ret, out, mark := e.run(t, e.objs.Steer, tc.pkt.bytes(t), 0, tc.ifindex)
			if ret != tc.want {
				t.Fatalf("verdict %d, want %d", int32(ret), int32(tc.want))
			}
			if mark != 0 {
				t.Errorf("mark %#x: an explicit inlet's packets are never marked", mark)
			}
			if tc.want == actRedirect {
				decodeReset(t, out, tc.pkt.dst, tc.pkt.src)
			}
			c, err := e.maps.Counters.Read(explicitPortal)
			if err != nil {
				t.Fatal(err)
			}
			if c.Refused != tc.refused || c.Spoofed != tc.spoofed || c.Steered != 0 {
				t.Errorf("counters %+v, want refused %d spoofed %d, none steered", c, tc.refused, tc.spoofed)
			}
			fl, ok, err := e.maps.Flows.Take(tc.pkt.src, tc.pkt.dst)
			if err != nil || ok != tc.flow || (ok && (fl.Workload != appW || fl.Ifindex != appIdx)) {
				t.Errorf("flow %+v recorded %v (%v), want recorded %v with workload %d on %d", fl, ok, err, tc.flow, appW, appIdx)
			}
			// The bridge passes it to the host stack, marked or not.
			for _, m := range []uint32{0, loader.DefaultMark} {
				if ret, _, _ := e.run(t, e.objs.Assign, tc.pkt.bytes(t), m, 0); ret != actUnspec {
					t.Errorf("assign (mark %#x): verdict %d, want TC_ACT_UNSPEC", m, int32(ret))
				}
			}
		})
	}
}

func TestAssign(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pkt        seg
		mark       uint32
		want       uint32
		reset      bool
		noListener uint64
	}{
		{name: "not to a service", pkt: seg{src: app, dst: ap("10.20.0.2:5432"), syn: true}, mark: 0, want: actUnspec},
		{name: "unmarked: no steer program saw it", pkt: seg{src: app, dst: svc, syn: true}, want: actRedirect, reset: true},
		{name: "marked, no agent listening", pkt: seg{src: app, dst: svc, syn: true}, mark: loader.DefaultMark, want: actRedirect, reset: true, noListener: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, false)
			ret, out, _ := e.run(t, e.objs.Assign, tc.pkt.bytes(t), tc.mark, 0)
			if ret != tc.want {
				t.Fatalf("verdict %d, want %d", int32(ret), int32(tc.want))
			}
			if tc.reset {
				decodeReset(t, out, tc.pkt.dst, tc.pkt.src)
			}
			c, err := e.maps.Counters.Read(portal)
			if err != nil {
				t.Fatal(err)
			}
			if c.NoListener != tc.noListener || c.Refused != boolU(tc.reset) || c.Steered != 0 {
				t.Errorf("counters %+v, want no_listener %d refused %d", c, tc.noListener, boolU(tc.reset))
			}
		})
	}
}

func boolU(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// TestRouted: the routed program (a routed veth, no bridge) refuses what
// steer refuses, passes an explicit inlet's allowed entry unmarked, and
// hands a steered SYN to the agent's listener, or resets it (counted
// no_listener) when none is published. TestRoutedVeths covers the
// listener's side on real veths.
func TestRouted(t *testing.T) {
	syn := func(from netip.AddrPort) seg { return seg{src: from, dst: svc, syn: true, seq: 1000} }
	for _, tc := range []struct {
		name       string
		pkt        seg
		ifindex    uint32
		deny       bool
		want       uint32
		reset      bool
		refused    uint64
		spoofed    uint64
		noListener uint64
	}{
		{name: "TCP not to a service", pkt: seg{src: app, dst: ap("10.200.0.10:5433"), syn: true}, want: actUnspec},
		{name: "allowed SYN, no agent listening", pkt: syn(app), ifindex: appIdx, want: actRedirect, reset: true, refused: 1, noListener: 1},
		{name: "unknown workload refused", pkt: syn(stranger), ifindex: otherIdx, want: actRedirect, reset: true, refused: 1},
		{name: "denied service refuses the allowed", pkt: syn(app), ifindex: appIdx, deny: true, want: actRedirect, reset: true, refused: 1},
		{name: "spoofed SYN from another veth", pkt: syn(app), ifindex: otherIdx, want: actRedirect, reset: true, refused: 1, spoofed: 1},
		{name: "a reset is never answered", pkt: seg{src: stranger, dst: svc, rst: true}, want: actShot},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, tc.deny)
			ret, out, _ := e.run(t, e.objs.Routed, tc.pkt.bytes(t), 0, tc.ifindex)
			if ret != tc.want {
				t.Fatalf("verdict %d, want %d", int32(ret), int32(tc.want))
			}
			if tc.reset {
				decodeReset(t, out, tc.pkt.dst, tc.pkt.src)
			}
			c, err := e.maps.Counters.Read(portal)
			if err != nil {
				t.Fatal(err)
			}
			if c.Refused != tc.refused || c.Spoofed != tc.spoofed || c.NoListener != tc.noListener || c.Steered != 0 {
				t.Errorf("counters %+v, want refused %d spoofed %d no_listener %d", c, tc.refused, tc.spoofed, tc.noListener)
			}
		})
	}
	t.Run("explicit inlet's allowed entry passes unmarked", func(t *testing.T) {
		e := setup(t, false)
		ret, _, mark := e.run(t, e.objs.Routed, seg{src: app, dst: inletAddr, syn: true}.bytes(t), 0, appIdx)
		if ret != actOK || mark != 0 {
			t.Errorf("verdict %d mark %#x, want %d unmarked", int32(ret), mark, actOK)
		}
	})
}
