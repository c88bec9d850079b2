package portal_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/portal"
)

// Direct paths on loopback: the agents and the hub all on 127.0.0.1, so
// each agent's control connection comes from the port it bound (it "keeps
// ports") and the hub offers direct paths. On loopback nothing drops a
// SYN: the punches race the peer's resets (direct.go), which the long
// punch timeout here absorbs on a loaded machine.
const testPunchTimeout = 5 * time.Second

// pathOptions are the portal options of a test run on the path its name
// ends with: a subtest "direct" takes direct paths, any other goes
// through the hub.
func pathOptions(t testing.TB) portal.Options {
	if strings.HasSuffix(t.Name(), "/direct") {
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

// TestChannelGoesDirect: with direct paths on, a channel goes straight to
// the outlet's agent: the hub coordinated one punch, relayed 0 bytes, and
// the inlet's agent says the peer is direct.
func TestChannelGoesDirect(t *testing.T) {
	s := newDirectStandard(t)
	defer func() {
		for _, e := range s.in.logs.All() {
			t.Log(e.Message, e.ContextMap())
		}
	}()
	if got, err := roundTrip(dial(t, s.inletAddr), []byte("hello")); err != nil || string(got) != "HELLO" {
		t.Fatalf("connection: %q, %v", got, err)
	}
	st := s.h.Relay().Stats()
	if st.Spliced != 0 || st.Punches != 1 || st.Direct != 1 {
		t.Errorf("hub: %d bytes relayed, %d punches, %d direct sessions; want 0, 1, 1", st.Spliced, st.Punches, st.Direct)
	}
	p := peerPath(s.in, s.out.Identity.ID())
	if p.Path != portal.PathDirect || p.Since.IsZero() {
		t.Errorf("peer path %+v, want direct", p)
	}
	if c := s.in.m.Direct(); c.ChannelsDirect != 1 || c.AttemptsOK != 1 || c.ChannelsRelayed != 0 {
		t.Errorf("direct counters %+v", c)
	}
}

// newDirectStandard is the standard pair on direct paths.
func newDirectStandard(t *testing.T) *standard {
	t.Helper()
	return newStandardWith(t, portal.Options{Direct: true, PunchTimeout: testPunchTimeout}, nil, "")
}
