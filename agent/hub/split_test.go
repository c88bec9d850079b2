package hub_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/relay"
	"github.com/sluicehq/sluice/agent/wire"
)

// TestSplitRoles: a relay that holds no signing key (its project directory
// has no authority.key), with the authority linked to it from elsewhere,
// enrolls agents, relays their sessions and passes the authority's changes
// on; member changes are the authority's, never the relay's.
func TestSplitRoles(t *testing.T) {
	h := testhub.Start(t, testhub.Options{Split: true})
	if _, err := os.Stat(filepath.Join(h.Relay().ProjectDir(), authority.AuthorityKey)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the relay's project directory holds the authority's key (%v)", err)
	}
	bank := h.Enroll(t, map[string]string{"postgres-outlet": "true"}, "postgres")
	claim(t, bank, "postgres")
	analysis := h.Enroll(t, map[string]string{"postgres-inlet": "true"})
	in := answer(bank)
	c, owner := dialData(t, analysis, "postgres")
	out := next(t, in)
	if owner != bank.Identity.ID() || out.From != analysis.Identity.ID() {
		t.Errorf("session from %s to %s, want %s to %s", out.From, owner, analysis.Identity.ID(), bank.Identity.ID())
	}
	roundTripData(t, c, out.conn)

	node := analysis.Identity.ID()
	m, err := h.Service.SetAttributes(node, map[string]string{"team": "ops"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := analysis.NextGrant(wait); err != nil {
		t.Errorf("the authority's fresh credential did not reach the changed node through the relay: %v", err)
	}
	u, err := bank.NextMemberOf(node, wait)
	for err == nil && u.Generation < m.Generation {
		u, err = bank.NextMemberOf(node, wait)
	}
	if err != nil || u.Attributes["team"] != "ops" {
		t.Errorf("bank heard %+v (%v), want generation %d with team=ops", u, err, m.Generation)
	}
	if _, err := h.Relay().SetAttributes(node, nil); !errors.Is(err, hub.ErrNotLocal) {
		t.Errorf("a member change asked of the relay: %v, want %v", err, hub.ErrNotLocal)
	}
	if _, err := h.Service.Revoke(node); err != nil {
		t.Fatal(err)
	}
	if !testhub.WaitFor(wait, func() bool { return !analysis.Client.Status().Connected }) {
		t.Error("the revoked agent's link stayed up")
	}
	if st, _ := bank.Verifier.Current(node); !st.Revoked {
		t.Errorf("bank knows %+v of the revoked node", st)
	}
}

// roundTripData sends a line each way over a relayed data session.
func roundTripData(t *testing.T, a, b interface {
	Write([]byte) (int, error)
	Read([]byte) (int, error)
}) {
	t.Helper()
	for _, p := range [][2]interface {
		Write([]byte) (int, error)
		Read([]byte) (int, error)
	}{{a, b}, {b, a}} {
		if _, err := p[0].Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		if n, err := p[1].Read(buf); err != nil || string(buf[:n]) != "ping\n" {
			t.Fatalf("relayed %q, %v", buf[:n], err)
		}
	}
}

// TestRelayWithoutItsAuthority: with the authority's link down, a new node
// cannot enroll (and is told why), while the members already connected
// keep their sessions.
func TestRelayWithoutItsAuthority(t *testing.T) {
	h := testhub.Start(t, testhub.Options{Split: true})
	bank := h.Enroll(t, map[string]string{"postgres-outlet": "true"}, "postgres")
	claim(t, bank, "postgres")
	h.StopAuthority()
	ticket := h.Ticket(t, authority.TicketOptions{Attributes: map[string]string{"postgres-inlet": "true"}})
	if _, err := h.Connect(t, testhub.AgentOptions{Ticket: ticket}); !errors.Is(err, relay.ErrNoAuthority) {
		t.Errorf("enrolling with the authority away: %v, want %v", err, relay.ErrNoAuthority)
	}
	if !bank.Client.Status().Connected {
		t.Error("a member lost its session when the authority went away")
	}
	h.StartAuthority()
	if !testhub.WaitFor(wait, func() bool {
		_, err := h.Connect(t, testhub.AgentOptions{Ticket: ticket})
		return err == nil
	}) {
		t.Error("the ticket could not be redeemed once the authority was back")
	}
}

// TestStaleMemberState: an agent that stops hearing the authority's signed
// heartbeat says its member state is stale, and current again once it
// hears it.
func TestStaleMemberState(t *testing.T) {
	h := testhub.Start(t, testhub.Options{Split: true, Hub: hub.HubOptions{HeartbeatInterval: 50 * time.Millisecond}})
	ticket := h.Ticket(t, authority.TicketOptions{})
	a, err := h.Connect(t, testhub.AgentOptions{Ticket: ticket, MaxStale: 400 * time.Millisecond, PingInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if st := a.Client.Status(); st.Stale || st.AuthorityHeard.IsZero() {
		t.Fatalf("a new agent: %+v, want a current member state", st)
	}
	h.StopAuthority()
	if !testhub.WaitFor(wait, func() bool { return a.Client.Status().Stale }) {
		t.Fatal("the member state never became stale without the authority's heartbeat")
	}
	h.StartAuthority()
	if !testhub.WaitFor(wait, func() bool { return !a.Client.Status().Stale }) {
		t.Fatal("the member state stayed stale after the authority came back")
	}
}

// TestMaliciousRelay: what a relay can send agents on its own gets it
// nothing: a word, a heartbeat or a credential it signed itself, or an old
// genuine word replayed.
func TestMaliciousRelay(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	bank := h.Enroll(t, map[string]string{"postgres-outlet": "true"}, "postgres")
	analysis := h.Enroll(t, map[string]string{"postgres-inlet": "true"})
	node := bank.Identity.ID()
	genuine, _ := analysis.Verifier.Current(node)
	_, oldWords, err := h.Service.Words(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Service.SetAttributes(node, map[string]string{"postgres-outlet": "true", "tier": "2"}); err != nil {
		t.Fatal(err)
	}
	if !testhub.WaitFor(wait, func() bool { st, _ := analysis.Verifier.Current(node); return st.Generation > genuine.Generation }) {
		t.Fatal("the genuine change did not arrive")
	}
	current, _ := analysis.Verifier.Current(node)
	heard := analysis.Client.Status().AuthorityHeard

	// The relay's own key: what it signs is not the authority's.
	_, evil, _ := ed25519.GenerateKey(rand.Reader)
	forge := func(v any) *wire.Statement {
		body, _ := json.Marshal(v)
		st := wire.Statement{Body: body, Sig: ed25519.Sign(evil, append([]byte("sluice-authority-statement-v1\x00"), body...))}
		return &st
	}
	project := h.Project.ID
	relayHub := h.Relay()
	relayHub.InjectForTest("member", forge(wire.Word{Kind: "member", Project: project, Node: node, Generation: 1 << 40, Revoked: true}), nil)
	relayHub.InjectForTest("member", forge(wire.Word{Kind: "member", Project: project, Node: analysis.Identity.ID(),
		Generation: 1 << 40, Attributes: map[string]string{"admin": "true"}}), nil)
	relayHub.InjectForTest("heartbeat", forge(wire.Heartbeat{Kind: "heartbeat", Project: project, Generation: 1 << 40,
		Time: time.Now().Add(time.Hour)}), nil)
	// A genuine word, replayed long after a newer one.
	for i := range oldWords {
		relayHub.InjectForTest("member", &oldWords[i], nil)
	}
	// A credential for analysis with attributes it was never given.
	evilCA, _ := credential.NewAuthority(evil, project, time.Hour)
	ca, _ := x509.ParseCertificate(evilCA)
	fake, err := credential.Issue(ca, evil, credential.Request{PublicKey: analysis.Identity.PublicKey(), ProjectID: project,
		Lifetime: time.Hour, Generation: 1 << 40, Attributes: map[string]string{"postgres-outlet": "true", "admin": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	relayHub.InjectForTest("grant", nil, fake)
	// A genuine heartbeat last: once analysis has it, it has read every
	// injection (one session's pushes arrive in order).
	time.Sleep(10 * time.Millisecond) // the heartbeat must be newer than the last one
	hb, err := h.Service.Heartbeat()
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := wire.OpenHeartbeat(h.Project.AuthorityPublicKey(), project, hb)
	relayHub.InjectForTest("heartbeat", &hb, nil)
	if !testhub.WaitFor(wait, func() bool { return analysis.Client.Status().AuthorityHeard.Equal(sealed.Time) }) {
		t.Fatalf("the genuine heartbeat never arrived: %+v", analysis.Client.Status())
	}
	if st, _ := analysis.Verifier.Current(node); st.Generation != current.Generation || st.Revoked {
		t.Errorf("after the forged and replayed words, analysis knows %+v of bank, want %+v", st, current)
	}
	if st, ok := analysis.Verifier.Current(analysis.Identity.ID()); ok && st.Attributes["admin"] != "" {
		t.Errorf("a forged word gave analysis %v", st.Attributes)
	}
	if heard.After(sealed.Time) {
		t.Errorf("authority heard at %v, after the genuine heartbeat of %v", heard, sealed.Time)
	}
	if g, err := analysis.NextGrant(100 * time.Millisecond); err == nil {
		t.Errorf("analysis took a credential the relay signed: %v", g.Attributes)
	}
	if c, err := credential.ParseDER(analysis.Keys.Get().Certificate[0]); err != nil || c.Attributes["admin"] != "" {
		t.Errorf("analysis presents a credential with %v (%v)", c.Attributes, err)
	}
}
