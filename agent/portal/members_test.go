package portal_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/portal"
)

// The project's current word on a node decides every connection, not the
// attributes its credential had when a channel was opened: these tests take
// an attribute away at the hub and try every way in that is left.

// warmUp carries one connection through the pair and waits until its
// channel is warm, ready to carry the next.
func (s *standard) warmUp(t *testing.T) {
	t.Helper()
	got, err := roundTrip(dial(t, s.inletAddr), []byte("warm up"))
	if err != nil || string(got) != "WARM UP" {
		t.Fatalf("warm-up connection: %q, %v", got, err)
	}
	if !testhub.WaitFor(wait, func() bool { return s.inletInfo(t).Warm == 1 }) {
		t.Fatal("no warm channel after a clean connection")
	}
	if err := s.tg.end(t); err != nil {
		t.Fatalf("warm-up connection ended at the target with %v", err)
	}
}

func (s *standard) inletInfo(t *testing.T) portal.InletInfo {
	for _, in := range s.in.m.Inlets() {
		if in.Name == "web" {
			return in
		}
	}
	t.Fatal("inlet web is gone")
	return portal.InletInfo{}
}

// heard waits until the agent has the authority's word on node at its
// member record's current generation.
func heard(t *testing.T, h *testhub.Hub, a *testhub.Agent, node string) {
	t.Helper()
	m, err := h.Auth.Member(node)
	if err != nil {
		t.Fatal(err)
	}
	if !testhub.WaitFor(wait, func() bool { st, _ := a.Members.Current(node); return st.Generation >= m.Generation }) {
		t.Fatalf("the agent never heard of generation %d of %s", m.Generation, node)
	}
}

// TestInletNodeLosesAttribute: the hub takes web-inlet away from the inlet's
// node. The outlet refuses its next connection on the warm channel opened
// before the change, a new channel with the fresh credential the hub pushed
// to the node, and a new channel with the credential from before the change
// (a node that keeps presenting it). Nothing more reaches the target.
func TestInletNodeLosesAttribute(t *testing.T) { bothPaths(t, testInletNodeLosesAttribute) }

func testInletNodeLosesAttribute(t *testing.T) {
	s := newStandard(t, nil, "")
	s.warmUp(t)
	before := s.in.Keys.Get()
	node := s.in.Identity.ID()
	if _, err := s.h.Relay().SetAttributes(node, map[string]string{"team": "ops"}); err != nil {
		t.Fatal(err)
	}
	heard(t, s.h, s.out.Agent, node)

	refusedAt(t, s.inletAddr, []byte("on the warm channel"))
	eventually(t, "outlet after the warm channel", s.outletCounters(t),
		portal.CounterValues{Accepted: 1, Refused: 1, BytesIn: 7, BytesOut: 7})

	g, err := s.in.NextGrant(wait)
	if err != nil {
		t.Fatalf("the hub pushed no fresh credential to the changed node: %v", err)
	}
	if g.Attributes["team"] != "ops" || g.Attributes["web-inlet"] != "" {
		t.Fatalf("pushed credential has %v", g.Attributes)
	}
	refusedAt(t, s.inletAddr, []byte("with the fresh credential"))
	eventually(t, "outlet after the fresh credential", s.outletCounters(t),
		portal.CounterValues{Accepted: 1, Refused: 2, BytesIn: 7, BytesOut: 7})

	s.in.Keys.Set(before)
	refusedAt(t, s.inletAddr, []byte("with the old credential"))
	eventually(t, "outlet after the old credential", s.outletCounters(t),
		portal.CounterValues{Accepted: 1, Refused: 3, BytesIn: 7, BytesOut: 7})

	if got := s.tg.accepted.Load(); got != 1 {
		t.Errorf("the target accepted %d connections, want only the warm-up's", got)
	}
	if got := settled(t, "inlet", s.inletCounters(t)); got.Refused != 3 || got.Failed != 0 {
		t.Errorf("inlet counters %+v, want the three refusals counted as refused\n%s", got, s.in.logText())
	}
}

// TestOutletNodeLosesAttribute: the hub takes web-outlet away from the
// outlet's node. The inlet no longer uses the warm channel to it, refuses a
// new channel with the node's fresh credential and one with its credential
// from before the change.
func TestOutletNodeLosesAttribute(t *testing.T) { bothPaths(t, testOutletNodeLosesAttribute) }

func testOutletNodeLosesAttribute(t *testing.T) {
	s := newStandard(t, nil, "")
	s.warmUp(t)
	before := s.out.Keys.Get()
	node := s.out.Identity.ID()
	if _, err := s.h.Relay().SetAttributes(node, map[string]string{"web-outlet": "false"}); err != nil {
		t.Fatal(err)
	}
	heard(t, s.h, s.in.Agent, node)
	if _, err := s.out.NextGrant(wait); err != nil {
		t.Fatalf("the hub pushed no fresh credential to the changed node: %v", err)
	}

	// The warm channel is dropped, and the new one's handshake sees the
	// fresh credential: refused.
	refusedAt(t, s.inletAddr, []byte("warm channel or fresh credential"))
	eventually(t, "inlet", s.inletCounters(t), portal.CounterValues{Accepted: 2, Refused: 1, BytesIn: 7, BytesOut: 7})
	if in := s.inletInfo(t); in.Warm != 0 || in.Channels != 1 {
		t.Errorf("%d warm, %d channels opened; want the warm one dropped and no new one", in.Warm, in.Channels)
	}

	s.out.Keys.Set(before)
	refusedAt(t, s.inletAddr, []byte("old credential"))
	eventually(t, "inlet", s.inletCounters(t), portal.CounterValues{Accepted: 3, Refused: 2, BytesIn: 7, BytesOut: 7})
	if got := s.tg.accepted.Load(); got != 1 {
		t.Errorf("the target accepted %d connections, want only the warm-up's", got)
	}
	if got := s.out.outletCounters(t, "web"); got.Accepted != 1 {
		t.Errorf("outlet counters %+v: it accepted more than the warm-up", got)
	}
}

// TestAttributeChangeThatStillAllows: a change the policies still admit
// leaves the warm channel in use, and the node's fresh credential works.
func TestAttributeChangeThatStillAllows(t *testing.T) {
	bothPaths(t, testAttributeChangeThatStillAllows)
}

func testAttributeChangeThatStillAllows(t *testing.T) {
	s := newStandard(t, nil, "")
	s.warmUp(t)
	node := s.in.Identity.ID()
	if _, err := s.h.Relay().SetAttributes(node, map[string]string{"web-inlet": "true", "team": "ops"}); err != nil {
		t.Fatal(err)
	}
	heard(t, s.h, s.out.Agent, node)
	for i, msg := range [][]byte{[]byte("on the warm channel"), []byte("again")} {
		got, err := roundTrip(dial(t, s.inletAddr), msg)
		if err != nil || !bytes.Equal(got, bytes.ToUpper(msg)) {
			t.Fatalf("connection %d after the change: %q, %v", i, got, err)
		}
		s.tg.end(t)
		if !testhub.WaitFor(wait, func() bool { return s.inletInfo(t).Warm == 1 }) {
			t.Fatal("the channel did not go back to the pool")
		}
	}
	if in := s.inletInfo(t); in.Channels != 1 {
		t.Errorf("%d channels opened, want the warm one reused", in.Channels)
	}
}

// TestOutletNodePin: an inlet pinned to a node refuses a channel to any
// other one, even one whose attributes its policy allows (as a relay that
// steers the inlet elsewhere would make it), and works with the right one.
func TestOutletNodePin(t *testing.T) { bothPaths(t, testOutletNodePin) }

func testOutletNodePin(t *testing.T) {
	s := newStandard(t, nil, "")
	// Another agent with the outlet's attributes: the one a dishonest
	// relay could steer to. The pin names it, not the relay's owner.
	other := s.h.Enroll(t, map[string]string{"web-outlet": "true"})
	addr := s.in.inlet(t, portal.InletSpec{Name: "pinned", Via: "web", Allow: "web-outlet", OutletNode: other.Identity.ID()})
	refusedAt(t, addr, []byte("to the wrong node"))
	if !testhub.WaitFor(wait, func() bool { return s.in.inletCounters(t, "pinned").Refused == 1 }) {
		t.Errorf("inlet counters %+v, want the wrong node refused", s.in.inletCounters(t, "pinned"))
	}
	if got := s.tg.accepted.Load(); got != 0 {
		t.Errorf("the target accepted %d connections", got)
	}
	if !strings.Contains(s.in.logText(), "peer is not the node") {
		t.Errorf("the inlet did not say why:\n%s", s.in.logText())
	}
	right := s.in.inlet(t, portal.InletSpec{Name: "right", Via: "web", Allow: "web-outlet", OutletNode: s.out.Identity.ID()})
	if got, err := roundTrip(dial(t, right), []byte("pinned")); err != nil || string(got) != "PINNED" {
		t.Errorf("through the pinned inlet to the right node: %q, %v", got, err)
	}
	if _, err := s.in.m.AddInlet(portal.InletSpec{Name: "bad", From: "127.0.0.1:0", Via: "web", Allow: "web-outlet", OutletNode: "not-a-node"}); !errors.Is(err, portal.ErrInvalid) {
		t.Errorf("a malformed --outlet-node: %v, want %v", err, portal.ErrInvalid)
	}
}
