package authority

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/wire"
)

func newProject(t *testing.T) *Project {
	t.Helper()
	p, err := Init(t.TempDir(), "127.0.0.1:4443")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func openAuthority(t *testing.T, p *Project, opts Options) *Authority {
	t.Helper()
	a, err := Open(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func nodeKey(t *testing.T) ed25519.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func TestInitLoad(t *testing.T) {
	p := newProject(t)
	for _, f := range []string{AuthorityKey, HubKey} {
		st, err := os.Stat(filepath.Join(p.Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	q, err := Load(p.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if q.ID != p.ID || q.HubAddress != p.HubAddress || !q.Key.Equal(p.Key) {
		t.Errorf("loaded project %+v differs from created %+v", q, p)
	}
	if err := q.HubCert.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("hub certificate: %v", err)
	}
	if _, err := Init(p.Dir, "127.0.0.1:4443"); !errors.Is(err, ErrProjectExists) {
		t.Errorf("second init: %v, want ErrProjectExists", err)
	}
	if _, err := Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "agentctl project init") {
		t.Errorf("load of empty dir: %v, want a hint to run project init", err)
	}
}

func TestInitBadHubAddress(t *testing.T) {
	for _, addr := range []string{"", "hub", "hub:0", "hub:99999", ":4443", "hub:x"} {
		if _, err := Init(t.TempDir(), addr); err == nil {
			t.Errorf("Init(%q) succeeded", addr)
		}
	}
}

func TestTicketRoundTrip(t *testing.T) {
	p := newProject(t)
	s, want, err := p.NewTicket(TicketOptions{Attributes: map[string]string{"postgres-outlet": "true"}, Relays: []string{"postgres"}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := wire.ParseTicket(s + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != want.ID || got.Hub != "127.0.0.1:4443" || got.Usage != 1 || got.Attributes["postgres-outlet"] != "true" {
		t.Errorf("parsed %+v, want %+v", got, want)
	}
	if d := time.Until(got.Expires); d < 9*time.Minute || d > 10*time.Minute {
		t.Errorf("default expiry in %v, want about 10m", d)
	}
	// Flip one character of the payload: the signature must no longer match.
	i := len(wire.TicketPrefix) + 5
	bad := s[:i] + string(s[i]^1) + s[i+1:]
	if _, err := wire.ParseTicket(bad); !errors.Is(err, wire.ErrTicketMalformed) {
		t.Errorf("tampered ticket: %v, want wire.ErrTicketMalformed", err)
	}
	if _, err := wire.ParseTicket("hello"); !errors.Is(err, wire.ErrTicketMalformed) {
		t.Errorf("garbage: %v, want wire.ErrTicketMalformed", err)
	}
}

func TestTicketOptionsChecked(t *testing.T) {
	p := newProject(t)
	for _, opts := range []TicketOptions{
		{Attributes: map[string]string{"bad name": "x"}},
		{Attributes: map[string]string{"a": "line\nbreak"}},
		{Relays: []string{"Upper"}},
		{Usage: -1},
		{ExpiresIn: -time.Second},
		{ExpiresIn: 365 * 24 * time.Hour},
	} {
		if _, _, err := p.NewTicket(opts); err == nil {
			t.Errorf("NewTicket(%+v) succeeded", opts)
		}
	}
}

func TestRedeem(t *testing.T) {
	p := newProject(t)
	a := openAuthority(t, p, Options{})
	s, _, err := p.NewTicket(TicketOptions{Attributes: map[string]string{"postgres-inlet": "true"}, Relays: []string{"pg"}})
	if err != nil {
		t.Fatal(err)
	}
	key := nodeKey(t)
	m, err := a.Redeem(s, key)
	if err != nil {
		t.Fatal(err)
	}
	if m.NodeID != identity.NodeID(key) || m.Attributes["postgres-inlet"] != "true" || !m.MayClaim("pg") || m.MayClaim("other") {
		t.Errorf("member %+v", m)
	}
	if _, err := a.Redeem(s, nodeKey(t)); !errors.Is(err, wire.ErrTicketUsed) {
		t.Errorf("reuse: %v, want wire.ErrTicketUsed", err)
	}
	der, _, err := a.Issue(m.NodeID)
	if err != nil {
		t.Fatal(err)
	}
	c, err := credential.ParseDER(der)
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeID != m.NodeID || c.ProjectID != p.ID || c.Attributes["postgres-inlet"] != "true" {
		t.Errorf("credential %+v", c)
	}
	if d := time.Until(c.Expires()); d > DefaultCredentialLifetime || d < DefaultCredentialLifetime-time.Minute {
		t.Errorf("credential expires in %v, want about %v", d, DefaultCredentialLifetime)
	}
	if _, _, err := a.Issue(identity.NodeID(nodeKey(t))); !errors.Is(err, wire.ErrNotMember) {
		t.Errorf("issue for stranger: %v, want wire.ErrNotMember", err)
	}
}

func TestRedeemUsageCount(t *testing.T) {
	p := newProject(t)
	a := openAuthority(t, p, Options{})
	s, _, err := p.NewTicket(TicketOptions{Usage: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := a.Redeem(s, nodeKey(t)); err != nil {
			t.Fatalf("redemption %d: %v", i+1, err)
		}
	}
	if _, err := a.Redeem(s, nodeKey(t)); !errors.Is(err, wire.ErrTicketUsed) {
		t.Errorf("third redemption: %v, want wire.ErrTicketUsed", err)
	}
}

func TestRedeemExpired(t *testing.T) {
	p := newProject(t)
	later := time.Now().Add(11 * time.Minute)
	a := openAuthority(t, p, Options{Now: func() time.Time { return later }})
	s, _, err := p.NewTicket(TicketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Redeem(s, nodeKey(t))
	if !errors.Is(err, wire.ErrTicketExpired) || !strings.Contains(err.Error(), "agentctl ticket create") {
		t.Errorf("expired: %v, want wire.ErrTicketExpired with a hint", err)
	}
}

func TestRedeemForeign(t *testing.T) {
	p, other := newProject(t), newProject(t)
	a := openAuthority(t, p, Options{})
	s, _, err := other.NewTicket(TicketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Redeem(s, nodeKey(t)); !errors.Is(err, wire.ErrTicketForeign) {
		t.Errorf("foreign ticket: %v, want wire.ErrTicketForeign", err)
	}
}

func TestMembersPersist(t *testing.T) {
	p := newProject(t)
	a, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, _, _ := p.NewTicket(TicketOptions{Attributes: map[string]string{"x": "1"}})
	key := nodeKey(t)
	if _, err := a.Redeem(s, key); err != nil {
		t.Fatal(err)
	}
	a.Close()
	b := openAuthority(t, p, Options{})
	m, err := b.Member(identity.NodeID(key))
	if err != nil {
		t.Fatal(err)
	}
	if m.Attributes["x"] != "1" {
		t.Errorf("member after reopen: %+v", m)
	}
	if _, err := b.Redeem(s, nodeKey(t)); !errors.Is(err, wire.ErrTicketUsed) {
		t.Errorf("reuse after reopen: %v, want wire.ErrTicketUsed", err)
	}
	ms, err := b.Members()
	if err != nil || len(ms) != 1 {
		t.Errorf("Members() = %v, %v; want one", ms, err)
	}
}
