package daemon

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/portal"
	"github.com/sluicehq/sluice/agent/relay"
	"github.com/sluicehq/sluice/agent/wire"
)

// TestDrainStopsTakingConnections: a draining agent releases its relays
// (the hub refuses dials to them at once) and its explicit inlets stop
// listening; with nothing live, Drain returns at once.
func TestDrainStopsTakingConnections(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	ticket := h.Ticket(t, authority.TicketOptions{Relays: []string{"pg"}})
	a := start(t, t.TempDir(), ticket)
	defer a.Close()
	ctx := context.Background()
	if err := a.CreateRelay(ctx, "pg"); err != nil {
		t.Fatal(err)
	}
	in, err := a.CreateInlet(portal.InletSpec{Name: "i", From: "127.0.0.1:0", Via: "pg", Allow: "x"})
	if err != nil {
		t.Fatal(err)
	}
	other := h.Enroll(t, nil)
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := a.Drain(dctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if _, _, err := other.Client.Dial(ctx, "pg"); !errors.Is(err, relay.ErrNoRelay) {
		t.Errorf("dial to the draining agent's relay: %v, want ErrNoRelay", err)
	}
	if c, err := net.Dial("tcp", in.Listening); err == nil {
		c.Close()
		t.Error("the draining agent's inlet still accepts connections")
	}
	if err := a.Close(); err != nil {
		t.Errorf("Close after Drain: %v", err)
	}
}

// TestRevokedAgentIsDone: an agent whose node is revoked stops serving on
// its own and says why.
func TestRevokedAgentIsDone(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	a := start(t, t.TempDir(), h.Ticket(t, authority.TicketOptions{}))
	defer a.Close()
	if _, err := h.Relay().Revoke(a.Status().Node); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked agent goes on")
	}
	if err := a.Err(); !errors.Is(err, wire.ErrMemberRevoked) {
		t.Errorf("Err() = %v, want ErrMemberRevoked", err)
	}
}
