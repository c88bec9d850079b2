package hub_test

import (
	"errors"
	"testing"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/wire"
)

// TestOutletLinksRepublishPolicies: an outlet agent's links to the other
// hubs (legs) publish its outlet policies again when they change, as its
// control link does. Its first outlet is created after the legs are up
// (the agent started with none and published an empty list: refuse
// every dial); an inlet on another hub that the new outlet's policy
// allows is then served there, not refused with dial_denied by a hub that
// still has the empty list.
func TestOutletLinksRepublishPolicies(t *testing.T) {
	c := startCluster(t, 2)
	out := c.enroll(t, "svc")
	if err := out.Client.PublishPolicies(t.Context(), nil); err != nil { // no outlet yet
		t.Fatal(err)
	}
	claim(t, out, "svc")
	c.waitClaimed(t, "svc", nil)
	if c.hubOf(t, out) != c.hubs[0] {
		t.Fatal("the outlet's agent is not on the first hub")
	}
	// The inlet's agent is on the other hub, where only a leg holds svc.
	hubs := []string{c.addrs[1], c.addrs[0]}
	h := c.hubs[0]
	in, err := h.Connect(t, testhub.AgentOptions{Hubs: hubs, Ticket: h.Ticket(t, authority.TicketOptions{
		Attributes: map[string]string{"svc-inlet": "true"}, Hubs: hubs})})
	if err != nil {
		t.Fatal(err)
	}
	if c.hubOf(t, in) != c.hubs[1] {
		t.Fatal("the inlet's agent is not on the second hub")
	}
	if _, _, err := in.Client.Dial(t.Context(), "svc"); !errors.Is(err, wire.ErrDialDenied) {
		t.Fatalf("dial before the outlet exists: %v, want %v", err, wire.ErrDialDenied)
	}
	if err := out.Client.PublishPolicies(t.Context(), []string{"svc-inlet"}); err != nil { // the outlet is created
		t.Fatal(err)
	}
	var last error
	if !testhub.WaitFor(wait, func() bool {
		_, _, last = in.Client.Dial(t.Context(), "svc")
		return last == nil
	}) {
		t.Fatalf("the hub of the outlet's leg still refuses the dial its new policy allows: %v", last)
	}
}
