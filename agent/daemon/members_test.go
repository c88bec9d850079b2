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
	a := &Agent{id: id, kick: make(chan struct{}, 1)}
	allow := policy.MustParse("postgres-outlet")
	if a.peerDenied("bank", allow) || a.peerDenied("", allow) {
		t.Error("denied without any word from the authority")
	}
	a.onMember(relay.MemberUpdate{Node: "bank", Attributes: map[string]string{"postgres-outlet": "false"}})
	if !a.peerDenied("bank", allow) || a.isRevoked("bank") {
		t.Error("attributes that fail the policy: want denied, not revoked")
	}
	a.onMember(relay.MemberUpdate{Node: "bank", Attributes: map[string]string{"postgres-outlet": "true"}})
	if a.peerDenied("bank", allow) {
		t.Error("attributes back: still denied")
	}
	a.onMember(relay.MemberUpdate{Node: "bank", Revoked: true})
	a.onMember(relay.MemberUpdate{Node: "bank", Attributes: map[string]string{"postgres-outlet": "true"}})
	if !a.isRevoked("bank") || !a.peerDenied("bank", allow) {
		t.Error("a revocation was undone by a later attribute update")
	}
	if a.peerDenied("other", allow) {
		t.Error("another node denied")
	}
	a.onMember(relay.MemberUpdate{Node: id.ID(), Revoked: true})
	if !a.peerDenied("other", allow) {
		t.Error("this agent revoked: its inlets must be denied whatever the peer")
	}
	if len(a.kick) != 1 || len(a.members.dirty) != 5 {
		t.Errorf("kick %d, dirty %v: want one pending kick and five updates to review", len(a.kick), a.members.dirty)
	}
}
