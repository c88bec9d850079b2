package hub_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/relay"
)

// held reports whether a's client holds relay name.
func held(a *testhub.Agent, name string) (bool, relay.ClaimStatus) {
	for _, c := range a.Client.Claims() {
		if c.Name == name {
			return c.Held, c
		}
	}
	return false, relay.ClaimStatus{}
}

// TestClaimTakenOverIsReported: when another connection of the same node
// (a second agent with this identity) takes a relay name, the hub tells the
// first, which reports the name as not held instead of claimed, does not
// take it back while the other holds it, and takes it back once the other
// lets it go: dials reach whoever holds it.
func TestClaimTakenOverIsReported(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	first := h.Enroll(t, nil, "pg")
	claim(t, first, "pg")
	second, err := h.Connect(t, testhub.AgentOptions{Identity: first.Identity})
	if err != nil {
		t.Fatal(err)
	}
	claim(t, second, "pg")
	if !testhub.WaitFor(wait, func() bool { ok, _ := held(first, "pg"); return !ok }) {
		t.Fatalf("the first agent still reports pg held after another connection of its node took it: %+v", first.Client.Claims())
	}
	if _, st := held(first, "pg"); !strings.Contains(st.Error, "another connection of this node") || st.NextRetry.IsZero() {
		t.Errorf("claim status %+v: want why and the next try", st)
	}

	inlet := h.Enroll(t, nil)
	fromFirst, fromSecond := answer(first), answer(second)
	time.Sleep(1500 * time.Millisecond) // the first agent's retries, if free only, come and go
	if ok, st := held(first, "pg"); ok {
		t.Fatalf("the first agent took pg back while the second holds it: %+v", st)
	}
	dialData(t, inlet, "pg")
	next(t, fromSecond)

	second.Stop()
	if !testhub.WaitFor(wait, func() bool { ok, _ := held(first, "pg"); return ok }) {
		t.Fatalf("the first agent did not take pg back once the second let it go: %+v", first.Client.Claims())
	}
	dialData(t, inlet, "pg")
	next(t, fromFirst)
}
