package authority

import (
	"testing"

	"github.com/sluicehq/sluice/agent/credential"
)

// TestGenerationMovesOnEveryChange: each change to a member record takes
// the project to a new generation, stamps the record with it, survives a
// reopening of the database, and is what the member's credentials carry.
func TestGenerationMovesOnEveryChange(t *testing.T) {
	p := newProject(t)
	a := openAuthority(t, p, Options{})
	if g, err := a.Generation(); err != nil || g != 0 {
		t.Fatalf("a new project's generation: %d, %v; want 0", g, err)
	}
	ticket, _, err := p.NewTicket(TicketOptions{Attributes: map[string]string{"role": "web"}, Usage: 2})
	if err != nil {
		t.Fatal(err)
	}
	pub, other := nodeKey(t), nodeKey(t)
	var last uint64
	step := func(what string, m *Member, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		g, err := a.Generation()
		if err != nil || m.Generation != g || g != last+1 {
			t.Fatalf("%s: record at generation %d, project at %d (%v); want both %d", what, m.Generation, g, err, last+1)
		}
		last = g
	}
	m, err := a.Redeem(ticket, pub)
	step("enroll", m, err)
	o, err := a.Redeem(ticket, other)
	step("enroll another", o, err)
	m, err = a.SetAttributes(m.NodeID, map[string]string{"role": "db"})
	step("set attributes", m, err)
	der, issued, err := a.Issue(m.NodeID)
	if err != nil {
		t.Fatal(err)
	}
	c, err := credential.ParseDER(der)
	if err != nil || c.Generation != issued.Generation || c.Generation != m.Generation {
		t.Errorf("credential generation %d (%v), want the record's %d", c.Generation, err, m.Generation)
	}
	o, err = a.Revoke(o.NodeID)
	step("revoke", o, err)
	a.Close()
	a = openAuthority(t, p, Options{})
	gen, ms, err := a.Snapshot()
	if err != nil || gen != last || len(ms) != 2 {
		t.Fatalf("after reopening: generation %d, %d members (%v); want %d, 2", gen, len(ms), err, last)
	}
	m, err = a.SetAttributes(m.NodeID, map[string]string{"role": "web"})
	step("set attributes after reopening", m, err)
}
