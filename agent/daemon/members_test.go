package daemon

import (
	"testing"

	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/policy"
	"github.com/sluicehq/sluice/agent/relay"
)

func TestMemberUpdates(t *testing.T) {
	id, err := identity.New()
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{rev: newReviewer(id.ID(), nil)}
	revoked := func(node string) bool { st, _ := a.rev.members.Current(node); return st.Revoked }
	allow := policy.MustParse("postgres-outlet")
	if a.rev.peerDenied("bank", allow) || a.rev.peerDenied("", allow) {
		t.Error("denied without any word from the authority")
	}
	a.rev.onMember(relay.MemberUpdate{Node: "bank", Generation: 2, Attributes: map[string]string{"postgres-outlet": "false"}})
	if !a.rev.peerDenied("bank", allow) || revoked("bank") {
		t.Error("attributes that fail the policy: want denied, not revoked")
	}
	a.rev.onMember(relay.MemberUpdate{Node: "bank", Generation: 3, Attributes: map[string]string{"postgres-outlet": "true"}})
	if a.rev.peerDenied("bank", allow) {
		t.Error("attributes back: still denied")
	}
	// Words can come out of order (a credential reply and a push): the
	// newest generation wins.
	a.rev.onMember(relay.MemberUpdate{Node: "bank", Generation: 2, Attributes: map[string]string{"postgres-outlet": "false"}})
	if a.rev.peerDenied("bank", allow) {
		t.Error("an older word replaced a newer one")
	}
	if st, ok := a.rev.members.Current("bank"); !ok || st.Generation != 3 {
		t.Errorf("current(bank) = %+v, %v; want generation 3", st, ok)
	}
	a.rev.onMember(relay.MemberUpdate{Node: "bank", Generation: 4, Revoked: true})
	a.rev.onMember(relay.MemberUpdate{Node: "bank", Generation: 5, Attributes: map[string]string{"postgres-outlet": "true"}})
	if !revoked("bank") || !a.rev.peerDenied("bank", allow) {
		t.Error("a revocation was undone by a later attribute update")
	}
	if a.rev.peerDenied("other", allow) {
		t.Error("another node denied")
	}
	a.rev.onMember(relay.MemberUpdate{Node: id.ID(), Generation: 6, Revoked: true})
	if !a.rev.peerDenied("other", allow) {
		t.Error("this agent revoked: its inlets must be denied whatever the peer")
	}
	if len(a.rev.kick) != 1 || len(a.rev.dirty) != 5 {
		t.Errorf("kick %d, dirty %v: want one pending kick and five updates to review", len(a.rev.kick), a.rev.dirty)
	}
}
