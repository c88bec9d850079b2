package daemon

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/portal"
	"github.com/sluicehq/sluice/agent/relay"
)

// TestOutletPoliciesPublished: the agent tells the hub its outlets'
// policies whenever they change and when it restarts, so that the hub
// refuses dials from nodes none of them allows.
func TestOutletPoliciesPublished(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	dir := t.TempDir()
	a := start(t, dir, h.Ticket(t, authority.TicketOptions{Relays: []string{"pg"}}))
	if err := a.CreateRelay(context.Background(), "pg"); err != nil {
		t.Fatal(err)
	}
	allowed := h.Enroll(t, map[string]string{"pg-inlet": "true"})
	stranger := h.Enroll(t, nil)
	dial := func(who *testhub.Agent) error {
		_, _, err := who.Client.Dial(t.Context(), "pg")
		return err
	}
	if err := dial(allowed); !errors.Is(err, relay.ErrDialDenied) {
		t.Errorf("dial to an agent without outlets: %v, want ErrDialDenied", err)
	}
	if _, err := a.CreateOutlet(portal.OutletSpec{Name: "pg", To: "127.0.0.1:5432", Allow: "pg-inlet"}); err != nil {
		t.Fatal(err)
	}
	if err := dial(allowed); err != nil {
		t.Errorf("dial by a node the outlet allows: %v", err)
	}
	if err := dial(stranger); !errors.Is(err, relay.ErrDialDenied) {
		t.Errorf("dial by a node no outlet allows: %v, want ErrDialDenied", err)
	}
	a.Close()

	b := start(t, dir, "")
	defer b.Close()
	if !testhub.WaitFor(5*time.Second, func() bool { r := b.Relays(); return len(r) == 1 && r[0].Claimed }) {
		t.Fatalf("relay not claimed after restart: %+v", b.Relays())
	}
	if err := dial(stranger); !errors.Is(err, relay.ErrDialDenied) {
		t.Errorf("after a restart, dial by a node no outlet allows: %v, want ErrDialDenied", err)
	}
	if err := dial(allowed); err != nil {
		t.Errorf("after a restart, dial by a node the outlet allows: %v", err)
	}
	if err := b.DeleteOutlet("pg"); err != nil {
		t.Fatal(err)
	}
	if err := dial(allowed); !errors.Is(err, relay.ErrDialDenied) {
		t.Errorf("dial once the outlet is gone: %v, want ErrDialDenied", err)
	}
}
