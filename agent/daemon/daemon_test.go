package daemon

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/portal"
)

func TestMain(m *testing.M) { testhub.Main(m) }

func start(t *testing.T, dir, ticket string) *Agent {
	t.Helper()
	a, err := Start(context.Background(), Options{StateDir: dir, Ticket: ticket, Datapath: DatapathOff})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestRestartKeepsIdentityAndPortals(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	dir := t.TempDir()
	ticket := h.Ticket(t, authority.TicketOptions{Attributes: map[string]string{"postgres-outlet": "true"}, Relays: []string{"postgres"}})
	a := start(t, dir, ticket)
	ctx := context.Background()
	if err := a.CreateRelay(ctx, "postgres"); err != nil {
		t.Fatal(err)
	}
	out, err := a.CreateOutlet(portal.OutletSpec{To: "127.0.0.1:5432", Allow: "postgres-inlet"})
	if err != nil || out.Name != "outlet-1" {
		t.Fatalf("CreateOutlet = %+v, %v", out, err)
	}
	if _, err := a.CreateOutlet(portal.OutletSpec{Name: "outlet-1", To: "127.0.0.1:5432", Allow: "x"}); !errors.Is(err, portal.ErrExists) {
		t.Errorf("duplicate outlet: %v, want ErrExists", err)
	}
	before := a.Status()
	if before.Attributes["postgres-outlet"] != "true" || !before.Hub.Connected || before.Credential.Expires.IsZero() {
		t.Errorf("status %+v", before)
	}
	a.Close()

	b := start(t, dir, "") // no ticket: the state directory is enrolled
	defer b.Close()
	after := b.Status()
	if after.Node != before.Node {
		t.Errorf("node %s after restart, %s before", after.Node, before.Node)
	}
	if len(after.Outlets) != 1 || after.Outlets[0].Name != "outlet-1" {
		t.Errorf("outlets after restart: %+v", after.Outlets)
	}
	if !testhub.WaitFor(5*time.Second, func() bool { r := b.Relays(); return len(r) == 1 && r[0].Claimed }) {
		t.Errorf("relay not claimed after restart: %+v", b.Relays())
	}
}

func TestNotEnrolled(t *testing.T) {
	_, err := Start(context.Background(), Options{StateDir: t.TempDir(), Datapath: DatapathOff})
	if !errors.Is(err, ErrNotEnrolled) {
		t.Errorf("Start without ticket = %v, want ErrNotEnrolled", err)
	}
}

func TestStartsWhileHubIsDown(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	dir := t.TempDir()
	ticket := h.Ticket(t, authority.TicketOptions{Relays: []string{"pg"}})
	a := start(t, dir, ticket)
	if err := a.CreateRelay(context.Background(), "pg"); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}
	b := start(t, dir, "")
	defer b.Close()
	if st := b.Status(); st.Hub.Connected || st.Credential.Expires.IsZero() {
		t.Errorf("offline start: status %+v, want disconnected with the saved credential", st)
	}
	h.Restart(t)
	if !testhub.WaitFor(10*time.Second, func() bool { r := b.Relays(); return len(r) == 1 && r[0].Claimed }) {
		t.Errorf("agent did not reconnect and re-claim its relay: %+v", b.Status().Hub)
	}
}

func TestTicketForAnotherProject(t *testing.T) {
	h1, h2 := testhub.Start(t, testhub.Options{}), testhub.Start(t, testhub.Options{})
	dir := t.TempDir()
	a := start(t, dir, h1.Ticket(t, authority.TicketOptions{}))
	a.Close()
	_, err := Start(context.Background(), Options{StateDir: dir, Ticket: h2.Ticket(t, authority.TicketOptions{}), Datapath: DatapathOff})
	if err == nil {
		t.Fatal("an agent enrolled in one project accepted a ticket for another")
	}
}
