package daemon

import (
	"errors"
	"testing"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/portal"
)

// TestOutletTargetResolves: CreateOutlet refuses a --to whose name does
// not resolve, and creates it with NoResolve; a restart restores that
// outlet without looking it up.
func TestOutletTargetResolves(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	dir := t.TempDir()
	a := start(t, dir, h.Ticket(t, authority.TicketOptions{}))
	const to = "postgres.sluice-test.invalid:5432"
	if _, err := a.CreateOutlet(portal.OutletSpec{Name: "pg", To: to, Allow: "x"}); !errors.Is(err, portal.ErrUnresolved) {
		t.Fatalf("CreateOutlet(--to %s) = %v, want ErrUnresolved", to, err)
	}
	if len(a.Outlets()) != 0 {
		t.Fatalf("a refused outlet was kept: %+v", a.Outlets())
	}
	if _, err := a.CreateOutlet(portal.OutletSpec{Name: "pg", To: to, Allow: "x", NoResolve: true}); err != nil {
		t.Fatalf("CreateOutlet(--to %s --no-resolve) = %v", to, err)
	}
	a.Close()
	b := start(t, dir, "")
	defer b.Close()
	if os := b.Outlets(); len(os) != 1 || os[0].Name != "pg" || os[0].State != StateRunning {
		t.Errorf("outlets after restart: %+v", os)
	}
}
