package daemon

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/portal"
)

// TestFailedRestoreKeepsTheConfiguration: an agent restarted while its
// inlet's port is held by another process starts anyway, leaves
// portals.json as it was, shows the inlet failed with why and when it
// tries again, and brings it up, without a restart, once it can. Its relay
// name, which another node claimed meanwhile, it claims too: both are
// replicas (docs/hub-cluster.md).
func TestFailedRestoreKeepsTheConfiguration(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	ctx := context.Background()
	dir := t.TempDir()
	a := start(t, dir, h.Ticket(t, authority.TicketOptions{Relays: []string{"pg"}}))
	if err := a.CreateRelay(ctx, "pg"); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().String()
	ln.Close()
	if _, err := a.CreateInlet(portal.InletSpec{Name: "db", From: port, Via: "pg", Allow: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateOutlet(portal.OutletSpec{Name: "out", To: "127.0.0.1:5432", Allow: "x"}); err != nil {
		t.Fatal(err)
	}
	a.Close()
	saved, err := os.ReadFile(filepath.Join(dir, portalsFile))
	if err != nil {
		t.Fatal(err)
	}

	other := start(t, t.TempDir(), h.Ticket(t, authority.TicketOptions{Relays: []string{"pg"}}))
	defer other.Close()
	if err := other.CreateRelay(ctx, "pg"); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", port)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	b, err := Start(ctx, Options{StateDir: dir, Datapath: DatapathOff})
	if err != nil {
		t.Fatalf("restart with a relay name and a port taken: %v; want it to start and keep them", err)
	}
	defer b.Close()
	unchanged := func(when string) {
		t.Helper()
		if now, err := os.ReadFile(filepath.Join(dir, portalsFile)); err != nil || !bytes.Equal(now, saved) {
			t.Errorf("%s: portals.json changed (%v):\n%s\nwas:\n%s", when, err, now, saved)
		}
	}
	unchanged("after the failed restore")
	st := b.Status()
	if len(st.Relays) != 1 || !st.Relays[0].Claimed {
		t.Errorf("relays %+v: want pg claimed, a replica beside the other node", st.Relays)
	}
	if len(st.Inlets) != 1 || st.Inlets[0].State != StateFailed || !strings.Contains(st.Inlets[0].Error, "address already in use") ||
		st.Inlets[0].NextRetry.IsZero() || st.Inlets[0].From != port {
		t.Errorf("inlets %+v: want db failed, its port in use, and a next try", st.Inlets)
	}
	if len(st.Outlets) != 1 || st.Outlets[0].State != StateRunning {
		t.Errorf("outlets %+v: want out running", st.Outlets)
	}

	busy.Close()
	if !testhub.WaitFor(10*time.Second, func() bool { ins := b.Inlets(); return len(ins) == 1 && ins[0].State == StateRunning }) {
		t.Errorf("inlet not started once its port was free: %+v", b.Inlets())
	}

	unchanged("once everything runs")
	if err := b.DeleteInlet("db"); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(filepath.Join(dir, portalsFile)); strings.Contains(string(now), `"db"`) {
		t.Errorf("a deleted inlet is still saved:\n%s", now)
	}
}

// TestFailedInletDeleted: a saved inlet that failed to start can be deleted;
// the retries stop, and another inlet may take its name.
func TestFailedInletDeleted(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	dir := t.TempDir()
	a := start(t, dir, h.Ticket(t, authority.TicketOptions{}))
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().String()
	a.Close()
	cfg := config{Inlets: []portal.InletSpec{{Name: "db", From: port, Via: "pg", Allow: "x"}}}
	if err := writeJSON(filepath.Join(dir, portalsFile), cfg); err != nil {
		t.Fatal(err)
	}
	b := start(t, dir, "")
	defer b.Close()
	if _, err := b.CreateInlet(portal.InletSpec{Name: "db", From: "127.0.0.1:0", Via: "pg", Allow: "x"}); !errors.Is(err, portal.ErrExists) {
		t.Errorf("an inlet named like a failed one: %v, want ErrExists", err)
	}
	if err := b.DeleteInlet("db"); err != nil {
		t.Fatal(err)
	}
	busy.Close()
	time.Sleep(2 * retryMin)
	if ins := b.Inlets(); len(ins) != 0 {
		t.Errorf("the deleted inlet came back: %+v", ins)
	}
}

// TestSecondIdentityTakesTheRelay: another agent with the same identity
// (a copied state directory) that claims the relay makes the first report
// it as not claimed, and, once the other is gone, the first claims it again
// by itself.
func TestSecondIdentityTakesTheRelay(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	ctx := context.Background()
	dir := t.TempDir()
	a := start(t, dir, h.Ticket(t, authority.TicketOptions{Relays: []string{"pg"}}))
	if err := a.CreateRelay(ctx, "pg"); err != nil {
		t.Fatal(err)
	}
	copyDir := t.TempDir()
	for _, f := range []string{identity.KeyFile, enrollmentFile, authorityFile, credentialFile, portalsFile} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(copyDir, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	defer a.Close()
	b := start(t, copyDir, "") // restores the relay: takes it
	if r := b.Relays(); len(r) != 1 || !r[0].Claimed {
		t.Fatalf("the copy's relays %+v, want pg claimed", r)
	}
	if !testhub.WaitFor(5*time.Second, func() bool { r := a.Relays(); return len(r) == 1 && !r[0].Claimed }) {
		t.Errorf("the first agent still says pg is claimed after the copy took it: %+v", a.Relays())
	}
	if r := a.Relays(); len(r) != 1 || !strings.Contains(r[0].Error, "another connection of this node") {
		t.Errorf("the first agent's relays %+v: want why", r)
	}
	b.Close()
	if !testhub.WaitFor(10*time.Second, func() bool { r := a.Relays(); return len(r) == 1 && r[0].Claimed }) {
		t.Errorf("the first agent did not claim pg again once the copy was gone: %+v", a.Relays())
	}
}
