package authority

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sluicehq/sluice/agent/identity"
)

// TestAuditLines checks that every enrollment, credential issued and member
// change writes exactly one audit line naming the node, and that a refused
// one writes none.
func TestAuditLines(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	p := newProject(t)
	a := openAuthority(t, p, Options{Audit: zap.New(core).Named("audit")})
	ticket, _, err := p.NewTicket(TicketOptions{Attributes: map[string]string{"role": "bank"}})
	if err != nil {
		t.Fatal(err)
	}
	var node string
	step := func(what, msg string, do func() error) {
		t.Helper()
		logs.TakeAll()
		err := do()
		got := logs.TakeAll()
		if msg == "" {
			if err == nil || len(got) != 0 {
				t.Errorf("%s: %v, %d audit lines; want an error and none", what, err, len(got))
			}
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if len(got) != 1 {
			t.Fatalf("%s: %d audit lines, want 1: %v", what, len(got), got)
		}
		e := got[0]
		if e.LoggerName != "audit" || e.Message != msg || e.ContextMap()["node"] != node {
			t.Errorf("%s: line %q from %q with %v, want %q from \"audit\" with node %s", what, e.Message, e.LoggerName, e.ContextMap(), msg, node)
		}
	}
	key := nodeKey(t)
	node = identity.NodeID(key)
	step("enroll", "enrolled", func() error { _, err := a.Redeem(ticket, key); return err })
	step("enroll with a used ticket", "", func() error { _, err := a.Redeem(ticket, nodeKey(t)); return err })
	step("issue", "credential issued", func() error { _, _, err := a.Issue(node); return err })
	step("renew", "credential issued", func() error { _, _, err := a.Issue(node); return err })
	step("set attributes", "member attributes set", func() error { _, err := a.SetAttributes(node, map[string]string{"role": "audit"}); return err })
	step("set a bad attribute", "", func() error { _, err := a.SetAttributes(node, map[string]string{"bad name": "x"}); return err })
	step("revoke", "member revoked", func() error { _, err := a.Revoke(node); return err })
	step("issue to the revoked", "", func() error { _, _, err := a.Issue(node); return err })
	step("issue to a stranger", "", func() error { _, _, err := a.Issue("nobody"); return err })
}
