package hub

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestSourceOf(t *testing.T) {
	for _, tt := range []struct{ addr, want string }{
		{"192.0.2.7:4443", "192.0.2.7/32"},
		{"[::ffff:192.0.2.7]:4443", "192.0.2.7/32"},
		{"[2001:db8:1:2:3:4:5:6]:4443", "2001:db8:1:2::/64"},
		{"[fe80::1%eth0]:4443", "fe80::/64"},
	} {
		a, err := net.ResolveTCPAddr("tcp", tt.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := sourceOf(a); got != netip.MustParsePrefix(tt.want) {
			t.Errorf("sourceOf(%s) = %s, want %s", tt.addr, got, tt.want)
		}
	}
}

// TestGateMemberSources: a member source keeps the reserved room for 24
// hours, and the gate remembers at most maxKnown of them.
func TestGateMemberSources(t *testing.T) {
	now := time.Unix(1000, 0)
	g := newGate(Limits{Unauthenticated: 3, Reserved: 2, PerSource: 3, PerMemberSource: 3}, &refusals{}, zap.NewNop())
	g.now = func() time.Time { return now }
	member, stranger := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("192.0.2.2/32")
	g.member(member)
	if g.enter(stranger) == nil {
		t.Fatal("a stranger refused with the unreserved room free")
	}
	if g.enter(stranger) != nil {
		t.Fatal("a stranger took the reserved room")
	}
	p := g.enter(member)
	if p == nil {
		t.Fatal("a member source refused the reserved room")
	}
	p.leave()
	now = now.Add(knownFor + time.Second)
	if g.enter(member) != nil {
		t.Error("a member source kept the reserved room after 24 hours")
	}
	for i := range maxKnown + 10 {
		g.member(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32))
	}
	if len(g.known) != maxKnown {
		t.Errorf("the gate remembers %d member sources, want at most %d", len(g.known), maxKnown)
	}
}
