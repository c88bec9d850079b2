package hub_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/channel"
	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/relay"
)

// silentOwner enrolls an agent that claims relayName and never opens the
// data sessions it is told about.
func silentOwner(t *testing.T, h *testhub.Hub, relayName string) *testhub.Agent {
	t.Helper()
	out := h.Enroll(t, nil, relayName)
	out.OnIncoming(func(relay.Incoming) {})
	claim(t, out, relayName)
	return out
}

// TestDialRateLimited: each node has its own token bucket; past it the hub
// refuses with code rate_limited and counts it.
func TestDialRateLimited(t *testing.T) {
	h := testhub.Start(t, testhub.Options{Hub: hub.HubOptions{Limits: hub.Limits{DialRate: 0.01, DialBurst: 3}}})
	silentOwner(t, h, "svc")
	flooder, other := h.Enroll(t, nil), h.Enroll(t, nil)
	for i := range 3 {
		if _, _, err := flooder.Client.Dial(t.Context(), "svc"); err != nil {
			t.Fatalf("dial %d of a burst of 3: %v", i+1, err)
		}
	}
	_, _, err := flooder.Client.Dial(t.Context(), "svc")
	checkRefused(t, err, relay.ErrRateLimited, "data sessions a second")
	if _, _, err := other.Client.Dial(t.Context(), "svc"); err != nil {
		t.Errorf("another node's dial while the first is limited: %v", err)
	}
	if n := h.Relay().Stats().Refused.DialRate; n != 1 {
		t.Errorf("hub counted %d rate-limited dials, want 1", n)
	}
}

// TestDialPendingCaps: a node, and the hub, hold at most so many sessions
// that wait for their data connections; one that starts or times out
// gives its place back.
func TestDialPendingCaps(t *testing.T) {
	const timeout = 300 * time.Millisecond
	h := testhub.Start(t, testhub.Options{Hub: hub.HubOptions{SessionTimeout: timeout,
		Limits: hub.Limits{PendingPerNode: 2, Pending: 3}}})
	silentOwner(t, h, "svc")
	a, b := h.Enroll(t, nil), h.Enroll(t, nil)
	for range 2 {
		if _, _, err := a.Client.Dial(t.Context(), "svc"); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err := a.Client.Dial(t.Context(), "svc")
	checkRefused(t, err, relay.ErrRateLimited, "this node has 2 data sessions waiting")
	if _, _, err := b.Client.Dial(t.Context(), "svc"); err != nil {
		t.Fatalf("another node's dial: %v", err)
	}
	_, _, err = b.Client.Dial(t.Context(), "svc")
	checkRefused(t, err, relay.ErrRateLimited, "the hub has 3 data sessions waiting")
	st := h.Relay().Stats()
	if st.Refused.DialPendingNode != 1 || st.Refused.DialPending != 1 || st.Pending != 3 {
		t.Errorf("hub stats %+v: want 3 pending, 1 refusal for the node's cap and 1 for the hub's", st)
	}
	if !testhub.WaitFor(wait, func() bool { return h.Relay().Stats().Pending == 0 }) {
		t.Fatalf("%d sessions still pending after their timeout", h.Relay().Stats().Pending)
	}
	if _, _, err := a.Client.Dial(t.Context(), "svc"); err != nil {
		t.Errorf("dial once the node's sessions timed out: %v", err)
	}
	// A session that starts gives its place back too.
	h2 := testhub.Start(t, testhub.Options{Hub: hub.HubOptions{Limits: hub.Limits{PendingPerNode: 1}}})
	out, in := h2.Enroll(t, nil, "svc"), h2.Enroll(t, nil)
	sessions := answer(out)
	claim(t, out, "svc")
	for range 3 {
		dialData(t, in, "svc")
		next(t, sessions)
	}
}

// TestDialPolicyFilter: an owner that published its outlets' policies gets
// no dial from a node none of them allows: the hub refuses it with code
// dial_denied, by the caller's current attributes; an owner that published
// nothing gets every dial.
func TestDialPolicyFilter(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	owner := silentOwner(t, h, "svc")
	silentOwner(t, h, "open") // publishes nothing
	if err := owner.Client.PublishPolicies(t.Context(), []string{"db-inlet", `env in [prod, staging] and team == "data"`}); err != nil {
		t.Fatal(err)
	}
	allowed := h.Enroll(t, map[string]string{"db-inlet": "true"})
	alsoAllowed := h.Enroll(t, map[string]string{"env": "prod", "team": "data"})
	stranger := h.Enroll(t, map[string]string{"env": "prod"})
	for _, a := range []*testhub.Agent{allowed, alsoAllowed} {
		if _, _, err := a.Client.Dial(t.Context(), "svc"); err != nil {
			t.Errorf("dial by a node a published policy allows: %v", err)
		}
	}
	_, _, err := stranger.Client.Dial(t.Context(), "svc")
	checkRefused(t, err, relay.ErrDialDenied, "none allows")
	if !errors.Is(err, channel.ErrDenied) {
		t.Errorf("dial_denied: %v does not match channel.ErrDenied, which inlets count as a policy refusal", err)
	}
	if _, _, err := stranger.Client.Dial(t.Context(), "open"); err != nil {
		t.Errorf("dial to an owner that published nothing: %v", err)
	}
	if n := h.Relay().Stats().Refused.DialPolicy; n != 1 {
		t.Errorf("hub counted %d dials refused by policy, want 1", n)
	}

	// The hub uses the member's attributes as they are now.
	if _, err := h.Relay().SetAttributes(stranger.Identity.ID(), map[string]string{"db-inlet": "true"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := stranger.Client.Dial(t.Context(), "svc"); err != nil {
		t.Errorf("dial after the node was given an allowed attribute: %v", err)
	}

	// An empty list: the owner has no outlet.
	if err := owner.Client.PublishPolicies(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	_, _, err = allowed.Client.Dial(t.Context(), "svc")
	checkRefused(t, err, relay.ErrDialDenied, "published 0 outlet policies")

	// The list outlives a reconnection: the client publishes it again
	// before it claims its relays.
	if err := owner.Client.PublishPolicies(t.Context(), []string{"db-inlet"}); err != nil {
		t.Fatal(err)
	}
	h.Restart(t)
	if !testhub.WaitFor(wait, func() bool { return slices.Contains(relaysOf(h), "svc") }) {
		t.Fatalf("relay svc not claimed again after the restart; hub relays %v", relaysOf(h))
	}
	waitConnected(t, alsoAllowed)
	_, _, err = alsoAllowed.Client.Dial(t.Context(), "svc")
	checkRefused(t, err, relay.ErrDialDenied, "none allows")
}

func waitConnected(t *testing.T, a *testhub.Agent) {
	t.Helper()
	if !testhub.WaitFor(wait, func() bool {
		_, _, err := a.Client.Dial(t.Context(), "nobody")
		return errors.Is(err, relay.ErrNoRelay)
	}) {
		t.Fatalf("agent not connected again: %+v", a.Client.Status())
	}
}

// TestPublishPoliciesChecked: the hub refuses a list it cannot use, with
// code malformed, and keeps the link.
func TestPublishPoliciesChecked(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	a := h.Enroll(t, nil)
	c := dialControl(t, h.Addr, a.Identity)
	c.present(t, a)
	c.send(t, `{"id":2,"op":"policies","policies":["db-inlet and"]}`)
	if m := c.next(t); m.ID != 2 || m.Code != "malformed" {
		t.Errorf("answer to an unparsable policy: %+v, want code malformed", m)
	}
	c.send(t, `{"id":3,"op":"ping"}`)
	if m := c.next(t); m.ID != 3 || m.Error != "" {
		t.Errorf("ping after a refused list: %+v", m)
	}
}
