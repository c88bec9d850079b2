package portal_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/channel"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/pipe"
	"github.com/sluicehq/sluice/agent/portal"
)

// Direct paths on loopback: the agents and the hub all on 127.0.0.1, so
// each agent's control connection comes from the port it bound (it "keeps
// ports") and the hub offers direct paths. On loopback nothing drops a
// SYN: the punches race the peer's resets (direct.go), which the long
// punch timeout here absorbs on a loaded machine.
const testPunchTimeout = 5 * time.Second

// pathOptions are the portal options of a test run on the path its name
// says: a subtest "direct" (and its own subtests) takes direct paths, any
// other goes through the hub.
func pathOptions(t testing.TB) portal.Options {
	if strings.Contains(t.Name()+"/", "/direct/") {
		return portal.Options{Direct: true, PunchTimeout: testPunchTimeout}
	}
	return portal.Options{}
}

// bothPaths runs test on channels through the hub and on direct ones.
func bothPaths(t *testing.T, test func(t *testing.T)) {
	t.Run("relayed", test)
	t.Run("direct", test)
}

// peerPath is the path the in node's channels to peer take.
func peerPath(n *node, peer string) portal.PeerPath {
	for _, p := range n.m.Peers() {
		if p.Node == peer {
			return p
		}
	}
	return portal.PeerPath{}
}

// goDirect opens connections through s until one goes direct, as a
// background attempt would: where nothing drops SYNs (loopback) an attempt
// is a race that a loaded machine may lose (docs/direct-paths.md), and the
// connection then goes through the hub. It returns how many fell back.
func goDirect(t *testing.T, s *standard) int64 {
	t.Helper()
	for i := 0; ; i++ {
		if got, err := roundTrip(dial(t, s.inletAddr), []byte("hello")); err != nil || string(got) != "HELLO" {
			t.Fatalf("connection: %q, %v", got, err)
		}
		c := s.in.m.Direct()
		if c.ChannelsDirect > 0 {
			if c.AttemptsFailed > 0 {
				t.Logf("%d direct attempts lost the race on loopback and fell back to the hub", c.AttemptsFailed)
			}
			return c.AttemptsFailed
		}
		if i == 20 {
			t.Fatalf("no channel went direct in %d connections: %+v", i+1, c)
		}
		// A relayed peer waits for its background attempt (a short
		// backoff here); its channel is then warm and direct.
		testhub.WaitFor(wait, func() bool { return peerPath(s.in, s.out.Identity.ID()).NextAttempt.IsZero() })
	}
}

// TestChannelGoesDirect: with direct paths on, a channel goes straight to
// the outlet's agent: the hub coordinated a punch, relayed 0 bytes of it,
// and the inlet's agent says the peer is direct.
func TestChannelGoesDirect(t *testing.T) {
	defer portal.SetDirectBackoffForTest(20 * time.Millisecond)()
	s := newDirectStandard(t)
	fellBack := goDirect(t, s)
	// The inlet tells the hub its session went direct without waiting.
	testhub.WaitFor(wait, func() bool { return s.h.Relay().Stats().Direct >= 1 })
	st := s.h.Relay().Stats()
	if st.Punches < 1 || st.Direct < 1 {
		t.Errorf("hub: %d punches, %d direct sessions; want at least 1 each", st.Punches, st.Direct)
	}
	if fellBack == 0 && st.Spliced != 0 {
		t.Errorf("hub relayed %d bytes of a direct channel, want 0", st.Spliced)
	}
	p := peerPath(s.in, s.out.Identity.ID())
	if p.Path != portal.PathDirect || p.Since.IsZero() {
		t.Errorf("peer path %+v, want direct", p)
	}
	if c := s.in.m.Direct(); c.ChannelsDirect < 1 || c.AttemptsOK < 1 || c.ChannelsRelayed != c.AttemptsFailed {
		t.Errorf("direct counters %+v", c)
	}
}

// newDirectStandard is the standard pair on direct paths.
func newDirectStandard(t *testing.T) *standard {
	t.Helper()
	return newStandardWith(t, portal.Options{Direct: true, PunchTimeout: testPunchTimeout}, nil, "")
}

// TestDirectFallsBack: a direct attempt that fails (the outlet's agent
// does not connect, so the inlet's SYNs meet resets until the punch
// timeout) falls back to the hub with the same session; the peer is then
// relayed, and the next connection goes to the hub at once, with no
// attempt.
func TestDirectFallsBack(t *testing.T) {
	opts := portal.Options{Direct: true, WarmIdle: -1} // every connection a new channel
	s := newStandardWith(t, opts, nil, "")
	portal.SetPunchTo(s.out.m, func(netip.AddrPort) netip.AddrPort { return netip.AddrPort{} })
	first := time.Now()
	if got, err := roundTrip(dial(t, s.inletAddr), []byte("one")); err != nil || string(got) != "ONE" {
		t.Fatalf("first connection: %q, %v", got, err)
	}
	took1 := time.Since(first)
	p := peerPath(s.in, s.out.Identity.ID())
	if p.Path != portal.PathRelayed || p.NextAttempt.IsZero() {
		t.Errorf("after a failed attempt the peer is %+v, want relayed with a background attempt planned", p)
	}
	second := time.Now()
	if got, err := roundTrip(dial(t, s.inletAddr), []byte("two")); err != nil || string(got) != "TWO" {
		t.Fatalf("second connection: %q, %v", got, err)
	}
	took2 := time.Since(second)
	t.Logf("first connection (failed direct attempt, then the hub) took %v, the second (the hub at once) %v", took1, took2)
	c := s.in.m.Direct()
	if c.AttemptsFailed != 1 || c.AttemptsOK != 0 || c.ChannelsRelayed != 2 || c.ChannelsDirect != 0 {
		t.Errorf("direct counters %+v: want one failed attempt and two relayed channels", c)
	}
	st := s.h.Relay().Stats()
	if st.Punches != 1 || st.Direct != 0 {
		t.Errorf("hub: %d punches, %d direct; want 1 (the first connection's), 0", st.Punches, st.Direct)
	}
	if !testhub.WaitFor(wait, func() bool { return s.h.Relay().Stats().Spliced > 0 }) {
		t.Error("the hub relayed nothing: the fallback did not go through it")
	}
}

// TestNoAttemptWhenNotOffered: an inlet agent behind a NAT that changes
// ports (a forwarder to the hub) is offered no direct path: its channels go
// through the hub with no attempt and no wait.
func TestNoAttemptWhenNotOffered(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	tg := newTarget(t, bytes.ToUpper)
	opts := portal.Options{Direct: true}
	out := newNode(t, h, opts, map[string]string{"web-outlet": "true"}, "web")
	out.outlet(t, portal.OutletSpec{Name: "web", To: tg.addr, Allow: "web-inlet"})
	fw := h.Forward(t)
	in := newNodeWith(t, h, testhub.AgentOptions{Direct: true, Hubs: []string{fw.Addr}}, opts, map[string]string{"web-inlet": "true"})
	addr := in.inlet(t, portal.InletSpec{Name: "web", Via: "web", Allow: "web-outlet"})
	if got, err := roundTrip(dial(t, addr), []byte("one")); err != nil || string(got) != "ONE" {
		t.Fatalf("connection: %q, %v", got, err)
	}
	if c := in.m.Direct(); c.NotOffered != 1 || c.AttemptsFailed != 0 || c.ChannelsRelayed != 1 {
		t.Errorf("direct counters %+v: want one dial not offered a direct path, one relayed channel", c)
	}
	if p := peerPath(in, out.Identity.ID()); p.Path != portal.PathRelayed {
		t.Errorf("peer %+v, want relayed", p)
	}
	if n := h.Relay().Stats().Punches; n != 0 {
		t.Errorf("hub coordinated %d punches, want 0", n)
	}
}

// TestDirectBreaks: a direct channel whose connection breaks under it
// (reset by the peer's side, as a NAT or firewall that lost the mapping
// makes it) resets the app's connection, never a clean end; the peer is
// relayed at once and the next connection goes through the hub with no
// attempt; a background attempt brings the peer back to direct, with a
// warm direct channel that carries the next connection.
func TestDirectBreaks(t *testing.T) {
	defer portal.SetDirectBackoffForTest(300 * time.Millisecond)()
	s := newDirectStandard(t)
	goDirect(t, s)
	c := dial(t, s.inletAddr) // on the warm direct channel
	echo(t, c, "before")
	if n := portal.AbortDirectForTest(s.out.m); n < 1 { // c's, and any warm one
		t.Fatalf("reset %d direct connections at the outlet, want c's at least", n)
	}
	if got, err := io.ReadAll(c); len(got) != 0 || !pipe.IsReset(err) {
		t.Errorf("the app's connection over the broken path read %q, %v; want a reset", got, err)
	}
	if !testhub.WaitFor(wait, func() bool { return peerPath(s.in, s.out.Identity.ID()).Path == portal.PathRelayed }) {
		t.Fatalf("peer %+v after its direct path broke, want relayed", peerPath(s.in, s.out.Identity.ID()))
	}
	// The next connection: through the hub at once (the background attempt
	// may run meanwhile: only its own punch is allowed).
	punches := s.h.Relay().Stats().Punches
	if got, err := roundTrip(dial(t, s.inletAddr), []byte("after")); err != nil || string(got) != "AFTER" {
		t.Fatalf("connection after the break: %q, %v", got, err)
	}
	if ctr := s.in.m.Direct(); ctr.Breaks != 1 || ctr.ChannelsRelayed < 1 {
		t.Errorf("direct counters %+v: want one break and a relayed channel", ctr)
	}
	if p := s.h.Relay().Stats().Punches; p > punches+1 {
		t.Errorf("%d punches after the break, want at most one (the background attempt)", p-punches)
	}
	// Background attempts after 0.3 s, 0.6 s, 1.2 s...: each a race on
	// loopback, which a loaded machine may lose a few times.
	if !testhub.WaitFor(3*wait, func() bool {
		p := peerPath(s.in, s.out.Identity.ID())
		return p.Path == portal.PathDirect && p.DirectChannels == 1
	}) {
		t.Fatalf("no background attempt brought the peer back to direct: %+v", peerPath(s.in, s.out.Identity.ID()))
	}
	if !testhub.WaitFor(wait, func() bool { return s.inletInfo(t).Warm == 1 }) {
		t.Fatal("the background attempt's direct channel is not warm")
	}
	reused := s.inletInfo(t).WarmReused
	if got, err := roundTrip(dial(t, s.inletAddr), []byte("again")); err != nil || string(got) != "AGAIN" {
		t.Fatalf("connection on the background attempt's channel: %q, %v", got, err)
	}
	if r := s.inletInfo(t).WarmReused; r != reused+1 {
		t.Errorf("the connection after the background attempt did not take its warm direct channel (%d reuses, want %d)", r, reused+1)
	}
}

// TestDirectPinsOwner: a hub that sends the inlet to another node's
// address (here: the inlet's punch redirected to another enrolled node,
// with an outlet of the same name, that answers) does not get the channel
// there: the handshake pins the owner the hub named, refuses the other
// node, and the connection goes through the hub to the real owner.
func TestDirectPinsOwner(t *testing.T) {
	s := newStandardWith(t, portal.Options{Direct: true}, nil, "")
	evil := newNode(t, s.h, portal.Options{}, map[string]string{"web-outlet": "true"})
	evil.outlet(t, portal.OutletSpec{Name: "web", To: s.tg.addr, Allow: "web-inlet"})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go evil.m.ServeDirect(c.(*net.TCPConn))
		}
	}()
	evilAddr := netip.MustParseAddrPort(ln.Addr().String())
	portal.SetPunchTo(s.in.m, func(netip.AddrPort) netip.AddrPort { return evilAddr })
	if got, err := roundTrip(dial(t, s.inletAddr), []byte("mine")); err != nil || string(got) != "MINE" {
		t.Fatalf("connection: %q, %v", got, err)
	}
	if err := s.in.loggedError("direct path failed; through the hub"); !errors.Is(err, channel.ErrWrongPeer) {
		t.Errorf("the direct attempt failed with %v, want channel.ErrWrongPeer", err)
	}
	if n := evil.outletCounters(t, "web").Accepted; n != 0 {
		t.Errorf("the other node's outlet carried %d connections", n)
	}
	if ctr := s.in.m.Direct(); ctr.AttemptsFailed != 1 || ctr.ChannelsDirect != 0 {
		t.Errorf("direct counters %+v: want one failed attempt, no direct channel", ctr)
	}
}

// TestRevocationResetsChannels: a revoked inlet node's live connection is
// reset (the agent's reviewer calls ReviewPeer when the authority's word
// comes), and its new connections are refused, on either path.
func TestRevocationResetsChannels(t *testing.T) { bothPaths(t, testRevocationResetsChannels) }

func testRevocationResetsChannels(t *testing.T) {
	s := newStandard(t, nil, "")
	c := dial(t, s.inletAddr)
	echo(t, c, "live")
	node := s.in.Identity.ID()
	if _, err := s.h.Relay().Revoke(node); err != nil {
		t.Fatal(err)
	}
	heard(t, s.h, s.out.Agent, node)
	if n := s.out.m.ReviewPeer(node, nil, true); n != 1 {
		t.Errorf("the outlet's agent reset %d channels of the revoked node, want 1", n)
	}
	if got, err := io.ReadAll(c); len(got) != 0 || !pipe.IsReset(err) {
		t.Errorf("the revoked node's live connection read %q, %v; want a reset", got, err)
	}
	if n := s.tg.accepted.Load(); n != 1 {
		t.Errorf("the target accepted %d connections, want 1", n)
	}
	refusedAt(t, s.inletAddr, []byte("after the revocation"))
	if n := s.tg.accepted.Load(); n != 1 {
		t.Errorf("the target accepted %d connections after the revocation, want none more", n-1)
	}
}
