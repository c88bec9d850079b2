package daemon

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/testhub"
)

// TestAgentFailsOverAndRemembersHubs: an agent enrolled with a ticket of
// two hubs keeps a link to each while it has a relay name, moves its
// control link to the other hub when its hub stops, and, restarted without
// the ticket while the first hub is still down, starts on the second: it
// saved the list.
func TestAgentFailsOverAndRemembersHubs(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	peer := h.StartPeer(t, nil)
	hubs := []string{h.Addr, peer.Addr}
	dir := t.TempDir()
	a := start(t, dir, h.Ticket(t, authority.TicketOptions{Relays: []string{"pg"}, Hubs: hubs}))
	if err := a.CreateRelay(t.Context(), "pg"); err != nil {
		t.Fatal(err)
	}
	if !testhub.WaitFor(10*time.Second, func() bool {
		links := a.Status().Hub.Hubs
		return len(links) == 2 && links[0].Connected && links[0].Role == "control" && links[1].Connected && links[1].Role == "outlet"
	}) {
		t.Fatalf("links %+v, want the control link on the first hub and an outlet link on the second", a.Status().Hub.Hubs)
	}
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}
	if !testhub.WaitFor(10*time.Second, func() bool { st := a.Status().Hub; return st.Connected && st.Hub == peer.Addr }) {
		t.Fatalf("hub link %+v, want it moved to %s", a.Status().Hub, peer.Addr)
	}
	a.Close()

	b := start(t, dir, "")
	defer b.Close()
	if st := b.Status().Hub; !st.Connected || st.Hub != peer.Addr {
		t.Errorf("restarted agent's hub link %+v, want connected to %s", st, peer.Addr)
	}
}
