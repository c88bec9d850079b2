package portal_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/flowlog"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/portal"
)

// flowPair is the standard pair with a flow log on each side.
type flowPair struct {
	*standard
	inLog, outLog *flowlog.Log
}

func newFlowPair(t *testing.T, inAttrs map[string]string, inAllow string) *flowPair {
	t.Helper()
	p := &flowPair{standard: &standard{h: testhub.Start(t, testhub.Options{})}, inLog: flowlog.New(0), outLog: flowlog.New(0)}
	if inAttrs == nil {
		inAttrs = map[string]string{"web-inlet": "true"}
	}
	if inAllow == "" {
		inAllow = "web-outlet"
	}
	p.tg = newTarget(t, bytes.ToUpper)
	p.out = newNode(t, p.h, portal.Options{Flows: p.outLog}, map[string]string{"web-outlet": "true"}, "web")
	p.out.outlet(t, portal.OutletSpec{Name: "web", To: p.tg.addr, Allow: "web-inlet"})
	p.in = newNode(t, p.h, portal.Options{Flows: p.inLog}, inAttrs)
	p.inletAddr = p.in.inlet(t, portal.InletSpec{Name: "web", Via: "web", Allow: inAllow})
	return p
}

// events waits until l holds n events, and checks it holds no more.
func events(t *testing.T, what string, l *flowlog.Log, n int) []flowlog.Event {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		got := l.Recent(flowlog.Filter{}, 100)
		if len(got) >= n || time.Now().After(deadline) {
			time.Sleep(100 * time.Millisecond) // a stray extra event would show now
			got = l.Recent(flowlog.Filter{}, 100)
			if len(got) != n {
				t.Fatalf("%s: %d events, want %d: %+v", what, len(got), n, got)
			}
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFlowsAllowed checks both sides' events for a connection that flows:
// open, then close with the bytes each way, the peer and its attributes.
func TestFlowsAllowed(t *testing.T) {
	p := newFlowPair(t, nil, "")
	c := dial(t, p.inletAddr)
	msg := []byte("hello through the portal")
	if got, err := roundTrip(c, msg); err != nil || !bytes.Equal(got, bytes.ToUpper(msg)) {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	n := int64(len(msg))
	in := events(t, "inlet", p.inLog, 2)
	outNode, inNode := p.out.Identity.ID(), p.in.Identity.ID()
	for i, typ := range []string{flowlog.TypeOpen, flowlog.TypeClose} {
		e := in[i]
		if e.Type != typ || e.Verdict != flowlog.Allowed || e.Portal != "web" || e.Direction != flowlog.Inlet ||
			e.Peer != outNode || e.PeerAttributes["web-outlet"] != "true" ||
			e.Client != c.LocalAddr().String() || e.Target != p.inletAddr {
			t.Errorf("inlet event %d: %+v, want %s allowed from %v to %s with peer %s", i, e, typ, c.LocalAddr(), p.inletAddr, outNode)
		}
	}
	if cl := in[1]; cl.BytesSent != n || cl.BytesReceived != n || cl.Error != "" || cl.Duration <= 0 {
		t.Errorf("inlet close: sent %d received %d duration %v error %q, want %d each way, clean", cl.BytesSent, cl.BytesReceived, cl.Duration, cl.Error, n)
	}
	out := events(t, "outlet", p.outLog, 2)
	for i, typ := range []string{flowlog.TypeOpen, flowlog.TypeClose} {
		e := out[i]
		if e.Type != typ || e.Verdict != flowlog.Allowed || e.Portal != "web" || e.Direction != flowlog.Outlet ||
			e.Peer != inNode || e.PeerAttributes["web-inlet"] != "true" || e.Target != p.tg.addr {
			t.Errorf("outlet event %d: %+v, want %s allowed to %s with peer %s", i, e, typ, p.tg.addr, inNode)
		}
	}
	if cl := out[1]; cl.BytesSent != n || cl.BytesReceived != n {
		t.Errorf("outlet close: sent %d received %d, want %d each way", cl.BytesSent, cl.BytesReceived, n)
	}
}

// TestFlowsOutletRefuses checks that a connection the outlet's policy
// refuses is one refused event on each side, never an open: the inlet's
// open waits for the outlet's status.
func TestFlowsOutletRefuses(t *testing.T) {
	p := newFlowPair(t, map[string]string{"web-inlet": "false"}, "")
	refusedAt(t, p.inletAddr, []byte("let me in"))
	for _, side := range []struct {
		what string
		l    *flowlog.Log
		peer string
	}{{"inlet", p.inLog, p.out.Identity.ID()}, {"outlet", p.outLog, p.in.Identity.ID()}} {
		e := events(t, side.what, side.l, 1)[0]
		if e.Type != flowlog.TypeRefused || e.Verdict != flowlog.Refused || e.By != flowlog.ByPolicy ||
			e.Peer != side.peer || !strings.Contains(e.Reason, "polic") {
			t.Errorf("%s: %+v, want refused by policy with peer %s", side.what, e, side.peer)
		}
	}
}

// TestFlowsInletRefuses checks the inlet's own policy refusing the outlet.
func TestFlowsInletRefuses(t *testing.T) {
	p := newFlowPair(t, nil, `env == "prod"`)
	refusedAt(t, p.inletAddr, nil)
	e := events(t, "inlet", p.inLog, 1)[0]
	if e.Type != flowlog.TypeRefused || e.By != flowlog.ByPolicy || e.Direction != flowlog.Inlet || e.Reason == "" {
		t.Errorf("inlet: %+v, want refused by policy with a reason", e)
	}
	events(t, "outlet", p.outLog, 0)
}
