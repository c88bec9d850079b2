package hub_test

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/relay"
	"github.com/sluicehq/sluice/agent/wire"
)

// wait bounds every poll and blocking step; tests pass long before it.
const wait = 10 * time.Second

// checkRefused checks that err is a refusal by the hub that matches sentinel
// and says why in words containing hint.
func checkRefused(t *testing.T, err, sentinel error, hint string) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("error %v, want %v", err, sentinel)
	}
	var he *relay.HubError
	if !errors.As(err, &he) {
		t.Errorf("error %v is not a *relay.HubError", err)
	}
	if !strings.Contains(err.Error(), hint) {
		t.Errorf("error %q does not mention %q", err, hint)
	}
}

func TestEnrollGrantsTicketAttributes(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	attrs := map[string]string{"role": "db", "env": "prod"}
	a := h.Enroll(t, attrs, "pg")
	g := a.Grant
	if g.Project != h.Project.ID || g.Node != a.Identity.ID() {
		t.Errorf("grant for project %q node %q, want %q %q", g.Project, g.Node, h.Project.ID, a.Identity.ID())
	}
	if !maps.Equal(g.Attributes, attrs) {
		t.Errorf("grant attributes %v, want %v", g.Attributes, attrs)
	}
	root, err := x509.ParseCertificate(g.Authority)
	if err != nil || !root.Equal(h.Project.Cert) {
		t.Fatalf("grant authority is not the project's (%v)", err)
	}
	v := credential.Verifier{Root: root, ProjectID: h.Project.ID}
	cred, err := v.Verify([][]byte{g.Credential})
	if err != nil {
		t.Fatalf("credential does not verify: %v", err)
	}
	if cred.NodeID != a.Identity.ID() || !maps.Equal(cred.Attributes, attrs) {
		t.Errorf("credential for %s with %v, want %s with %v", cred.NodeID, cred.Attributes, a.Identity.ID(), attrs)
	}
	if k, ok := cred.Cert.PublicKey.(ed25519.PublicKey); !ok || !k.Equal(a.Identity.PublicKey()) {
		t.Error("credential does not certify the node's key")
	}
	if st := a.Client.Status(); !st.Connected || st.Hub != h.Addr || st.LastError != "" {
		t.Errorf("status %+v, want connected to %s", st, h.Addr)
	}
	m, err := h.Auth.Member(a.Identity.ID())
	if err != nil || !m.MayClaim("pg") {
		t.Errorf("member record %+v, %v; want one allowed to claim pg", m, err)
	}
	// The hub answers the enrollment before it lists the session.
	if !testhub.WaitFor(wait, func() bool { return h.Relay().Stats().Sessions == 1 }) {
		t.Errorf("hub has %d sessions, want 1", h.Relay().Stats().Sessions)
	}
}

func TestEnrollTicketUsed(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	ticket := h.Ticket(t, authority.TicketOptions{Usage: 2})
	for i := range 2 {
		if _, err := h.Connect(t, testhub.AgentOptions{Ticket: ticket}); err != nil {
			t.Fatalf("use %d of 2: %v", i+1, err)
		}
	}
	_, err := h.Connect(t, testhub.AgentOptions{Ticket: ticket})
	checkRefused(t, err, wire.ErrTicketUsed, "used 2 of 2 times")
	if ms, _ := h.Auth.Members(); len(ms) != 2 {
		t.Errorf("%d members, want 2", len(ms))
	}
}

func TestEnrollTicketExpired(t *testing.T) {
	// The hub's clock runs an hour ahead of the ticket's ten minutes.
	h := testhub.Start(t, testhub.Options{Authority: authority.Options{
		Now: func() time.Time { return time.Now().Add(time.Hour) },
	}})
	_, err := h.Connect(t, testhub.AgentOptions{Ticket: h.Ticket(t, authority.TicketOptions{})})
	checkRefused(t, err, wire.ErrTicketExpired, "expired")
}

func TestEnrollForeignProject(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	other, err := authority.Init(t.TempDir(), h.Addr)
	if err != nil {
		t.Fatal(err)
	}
	ticket, parsed, err := other.NewTicket(authority.TicketOptions{})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("pinned to the ticket's authority", func(t *testing.T) {
		// As an agent does: it pins the authority key the ticket names, so
		// it refuses this hub before sending the ticket.
		_, err := h.Connect(t, testhub.AgentOptions{Ticket: ticket, AuthorityKey: parsed.AuthorityKey})
		if !errors.Is(err, relay.ErrHubUntrusted) {
			t.Fatalf("error %v, want ErrHubUntrusted", err)
		}
		if !strings.Contains(err.Error(), "another project") {
			t.Errorf("error %q does not say the hub is another project's", err)
		}
	})
	t.Run("pinned to this hub", func(t *testing.T) {
		_, err := h.Connect(t, testhub.AgentOptions{Ticket: ticket})
		checkRefused(t, err, wire.ErrTicketForeign, parsed.ID)
	})
	if ms, _ := h.Auth.Members(); len(ms) != 0 {
		t.Errorf("%d members after foreign tickets, want 0", len(ms))
	}
}

// tamper rewrites the attributes in a ticket's payload and keeps its signature.
func tamper(t *testing.T, ticket string, attrs map[string]string) string {
	t.Helper()
	const prefix = "sluice-ticket-v1."
	body, sig, ok := strings.Cut(strings.TrimPrefix(ticket, prefix), ".")
	if !ok {
		t.Fatalf("unexpected ticket format %q", ticket)
	}
	payload, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(payload, &fields); err != nil {
		t.Fatal(err)
	}
	fields["attributes"] = attrs
	if payload, err = json.Marshal(fields); err != nil {
		t.Fatal(err)
	}
	return prefix + base64.RawURLEncoding.EncodeToString(payload) + "." + sig
}

func TestEnrollTicketMalformed(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	good := h.Ticket(t, authority.TicketOptions{Attributes: map[string]string{"role": "web"}})
	for _, c := range []struct{ name, ticket, hint string }{
		{"tampered", tamper(t, good, map[string]string{"role": "admin"}), "signature does not match"},
		{"truncated", good[:len(good)-10], "bad encoding"},
		{"not a ticket", "hello", "does not start with"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := h.Connect(t, testhub.AgentOptions{Ticket: c.ticket})
			checkRefused(t, err, wire.ErrTicketMalformed, c.hint)
		})
	}
	if ms, _ := h.Auth.Members(); len(ms) != 0 {
		t.Errorf("%d members after malformed tickets, want 0", len(ms))
	}
	// The ticket was not spent by the attempts.
	if _, err := h.Connect(t, testhub.AgentOptions{Ticket: good}); err != nil {
		t.Errorf("the untampered ticket: %v", err)
	}
}

func TestHelloExistingMember(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	attrs := map[string]string{"team": "payments"}
	first := h.Enroll(t, attrs)
	// The same node again, as after an agent restart: no ticket.
	again, err := h.Connect(t, testhub.AgentOptions{Identity: first.Identity})
	if err != nil {
		t.Fatalf("hello of an enrolled node: %v", err)
	}
	if again.Grant.Node != first.Identity.ID() || !maps.Equal(again.Grant.Attributes, attrs) {
		t.Errorf("grant %+v, want node %s with %v", again.Grant, first.Identity.ID(), attrs)
	}
	if _, err := credential.ParseDER(again.Grant.Credential); err != nil {
		t.Errorf("credential: %v", err)
	}
}

func TestHelloStranger(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	_, err := h.Connect(t, testhub.AgentOptions{})
	checkRefused(t, err, wire.ErrNotMember, "not a member")
}

func TestCredentialRenewal(t *testing.T) {
	h := testhub.Start(t, testhub.Options{Authority: authority.Options{CredentialLifetime: 3 * time.Second}})
	a := h.Enroll(t, map[string]string{"role": "web"})
	first, err := credential.ParseDER(a.Grant.Credential)
	if err != nil {
		t.Fatal(err)
	}
	g, err := a.NextGrant(wait)
	if err != nil {
		t.Fatal(err)
	}
	received := time.Now()
	next, err := credential.ParseDER(g.Credential)
	if err != nil {
		t.Fatal(err)
	}
	if !next.Expires().After(first.Expires()) {
		t.Errorf("renewed credential expires %v, not after the first's %v", next.Expires(), first.Expires())
	}
	if !received.Before(first.Expires()) {
		t.Errorf("renewal arrived at %v, after the first credential expired at %v", received, first.Expires())
	}
	if next.NodeID != a.Identity.ID() || next.Attributes["role"] != "web" {
		t.Errorf("renewed credential %s %v, want %s with role=web", next.NodeID, next.Attributes, a.Identity.ID())
	}
	// Renew on demand gives a fresh one too.
	ctx := t.Context()
	r, err := a.Client.Renew(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, err := credential.ParseDER(r.Credential)
	if err != nil {
		t.Fatal(err)
	}
	if c.Expires().Before(next.Expires()) {
		t.Errorf("Renew gave a credential expiring %v, before the previous one's %v", c.Expires(), next.Expires())
	}
}
