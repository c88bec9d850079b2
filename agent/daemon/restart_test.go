package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/portal"
)

// TestRestartWithTheFirstTicket: a fixed command line (a systemd unit, a
// DaemonSet) passes the enrollment ticket at every start. An enrolled state
// directory ignores a ticket it redeemed, keeps its identity and portals,
// and still refuses a ticket of another project.
func TestRestartWithTheFirstTicket(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	dir := t.TempDir()
	ticket := h.Ticket(t, authority.TicketOptions{Attributes: map[string]string{"postgres-outlet": "true"}, Relays: []string{"pg"}})
	a := start(t, dir, ticket)
	if err := a.CreateRelay(context.Background(), "pg"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateOutlet(portal.OutletSpec{To: "127.0.0.1:5432", Allow: "postgres-inlet"}); err != nil {
		t.Fatal(err)
	}
	node := a.Status().Node
	a.Close()
	for i := 0; i < 2; i++ {
		b, err := Start(context.Background(), Options{StateDir: dir, Ticket: ticket, Datapath: DatapathOff})
		if err != nil {
			t.Fatalf("restart %d with the ticket it enrolled with: %v", i+1, err)
		}
		st := b.Status()
		if st.Node != node || len(st.Outlets) != 1 || st.Attributes["postgres-outlet"] != "true" {
			t.Errorf("restart %d: node %s, outlets %+v, attributes %v; want %s, its outlet and attributes", i+1, st.Node, st.Outlets, st.Attributes, node)
		}
		if !testhub.WaitFor(5*time.Second, func() bool { r := b.Relays(); return len(r) == 1 && r[0].Claimed }) {
			t.Errorf("restart %d: relay %+v, want pg claimed", i+1, b.Relays())
		}
		b.Close()
	}
	other := testhub.Start(t, testhub.Options{})
	if _, err := Start(context.Background(), Options{StateDir: dir, Ticket: other.Ticket(t, authority.TicketOptions{}), Datapath: DatapathOff}); err == nil ||
		!strings.Contains(err.Error(), "use another --state-dir") {
		t.Errorf("a ticket of another project on an enrolled state directory: %v, want a refusal", err)
	}
}

// TestSpentTicketOnAnOlderStateDir: a state directory enrolled before
// tickets were remembered, restarted with its first ticket (used up, or
// expired): the agent starts as the member it is, and remembers the ticket.
// A new ticket of the project adds its attributes to the membership.
func TestSpentTicketOnAnOlderStateDir(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	dir := t.TempDir()
	first := h.Ticket(t, authority.TicketOptions{Attributes: map[string]string{"a": "1"}})
	start(t, dir, first).Close()
	path := filepath.Join(dir, enrollmentFile)
	var enr enrollment
	if _, err := readJSON(path, &enr); err != nil || len(enr.Tickets) != 1 {
		t.Fatalf("enrollment %+v (%v): want the ticket remembered", enr, err)
	}
	enr.Tickets = nil // as an older version wrote it
	if err := writeJSON(path, enr); err != nil {
		t.Fatal(err)
	}
	b, err := Start(context.Background(), Options{StateDir: dir, Ticket: first, Datapath: DatapathOff})
	if err != nil {
		t.Fatalf("restart of an older state directory with its used ticket: %v", err)
	}
	b.Close()
	if _, err := readJSON(path, &enr); err != nil || len(enr.Tickets) != 1 {
		t.Errorf("enrollment %+v (%v): want the spent ticket remembered", enr, err)
	}
	more := h.Ticket(t, authority.TicketOptions{Attributes: map[string]string{"b": "2"}})
	c, err := Start(context.Background(), Options{StateDir: dir, Ticket: more, Datapath: DatapathOff})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if at := c.Status().Attributes; at["a"] != "1" || at["b"] != "2" {
		t.Errorf("attributes %v after a new ticket, want a=1 and b=2", at)
	}
}

// TestOneAgentPerStateDir: a second agent on a state directory in use
// refuses at once, naming the first one's pid; once the first stops, it
// starts.
func TestOneAgentPerStateDir(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	dir := t.TempDir()
	a := start(t, dir, h.Ticket(t, authority.TicketOptions{}))
	_, err := Start(context.Background(), Options{StateDir: dir, Datapath: DatapathOff})
	if !errors.Is(err, ErrStateDirBusy) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Errorf("second agent on the state directory: %v, want ErrStateDirBusy naming pid %d", err, os.Getpid())
	}
	a.Close()
	b, err := Start(context.Background(), Options{StateDir: dir, Datapath: DatapathOff})
	if err != nil {
		t.Fatalf("after the first agent stopped: %v", err)
	}
	b.Close()
}
