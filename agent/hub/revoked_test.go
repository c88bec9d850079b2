package hub_test

import (
	"maps"
	"slices"
	"testing"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/wire"
)

// TestRevokedMemberRedeemsFreshTicket: a revoked node that presents a
// fresh ticket, with new attributes and a relay name, gets nothing (the
// README's promise): no credential, no session, and its member record, the
// project's generation and every other agent's view stay as they were.
func TestRevokedMemberRedeemsFreshTicket(t *testing.T) {
	for _, split := range []bool{false, true} {
		name := "one hub"
		if split {
			name = "relay and authority apart"
		}
		t.Run(name, func(t *testing.T) {
			h := testhub.Start(t, testhub.Options{Split: split})
			a := h.Enroll(t, map[string]string{"team": "ops"})
			node := a.Identity.ID()
			if _, err := h.Service.Revoke(node); err != nil {
				t.Fatal(err)
			}
			before, err := h.Auth.Member(node)
			if err != nil {
				t.Fatal(err)
			}
			gen, err := h.Auth.Generation()
			if err != nil {
				t.Fatal(err)
			}
			ticket := h.Ticket(t, authority.TicketOptions{Attributes: map[string]string{"postgres-inlet": "true"}, Relays: []string{"postgres"}})
			_, err = h.Connect(t, testhub.AgentOptions{Identity: a.Identity, Ticket: ticket})
			checkRefused(t, err, wire.ErrMemberRevoked, "revoked")

			after, err := h.Auth.Member(node)
			if err != nil {
				t.Fatal(err)
			}
			if !after.Revoked || after.Generation != before.Generation || !maps.Equal(after.Attributes, before.Attributes) ||
				!slices.Equal(after.Relays, before.Relays) {
				t.Errorf("member record after the fresh ticket %+v, want it as it was: %+v", after, before)
			}
			if g, err := h.Auth.Generation(); err != nil || g != gen {
				t.Errorf("project generation %d (%v) after the fresh ticket, want %d: no word about anyone", g, err, gen)
			}
			// An agent that connects now hears the node is revoked, and
			// nothing newer.
			late := h.Enroll(t, nil)
			for {
				u, err := late.NextMemberOf(node, wait)
				if err != nil {
					t.Fatalf("a new agent did not hear of the revocation: %v", err)
				}
				if u.Generation > before.Generation || u.Attributes["postgres-inlet"] != "" {
					t.Fatalf("a new agent heard %+v about the revoked node", u)
				}
				if u.Revoked {
					break
				}
			}
		})
	}
}
