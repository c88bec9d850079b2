package channel

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/policy"
)

// authorizeFixture is a verified peer credential at generation 3 with
// postgres-inlet=true, and a verifier whose member view the test sets.
func authorizeFixture(t testing.TB) (*credential.Verifier, *credential.Members, *credential.Credential) {
	t.Helper()
	_, caKey, _ := ed25519.GenerateKey(rand.Reader)
	caDER, err := credential.NewAuthority(caKey, "proj", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	der, err := credential.Issue(ca, caKey, credential.Request{PublicKey: pub, ProjectID: "proj", Lifetime: time.Hour,
		Generation: 3, Attributes: map[string]string{"postgres-inlet": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	ms := new(credential.Members)
	v := &credential.Verifier{Root: ca, ProjectID: "proj", Current: ms.Current}
	peer, err := v.Verify([][]byte{der})
	if err != nil {
		t.Fatal(err)
	}
	return v, ms, peer
}

// TestAdmitAndAuthorize: a new channel needs the node's current credential;
// a stream on an open channel needs the node's current attributes.
func TestAdmitAndAuthorize(t *testing.T) {
	v, ms, peer := authorizeFixture(t)
	allow := policy.MustParse("postgres-inlet")
	if err := Admit(v, allow, peer); err != nil {
		t.Fatalf("admit with no newer word: %v", err)
	}
	ms.Update(peer.NodeID, credential.State{Generation: 4, Attributes: map[string]string{"postgres-inlet": "true", "team": "x"}})
	if err := Admit(v, allow, peer); !errors.Is(err, credential.ErrStale) {
		t.Errorf("admit with a credential older than the member state: %v, want %v", err, credential.ErrStale)
	}
	if err := Authorize(v, allow, peer); err != nil {
		t.Errorf("a stream on an open channel, newer word still allowed: %v", err)
	}
	ms.Update(peer.NodeID, credential.State{Generation: 5, Attributes: map[string]string{"team": "x"}})
	if err := Authorize(v, allow, peer); !errors.Is(err, ErrDenied) {
		t.Errorf("a stream after the attribute was taken away: %v, want %v", err, ErrDenied)
	}
	ms.Update(peer.NodeID, credential.State{Generation: 6, Revoked: true})
	if err := Authorize(v, allow, peer); !errors.Is(err, credential.ErrRevoked) {
		t.Errorf("a stream after revocation: %v, want %v", err, credential.ErrRevoked)
	}
}

// BenchmarkAuthorize is the cost every stream on a channel pays for using
// the project's current word on its peer.
func BenchmarkAuthorize(b *testing.B) {
	v, ms, peer := authorizeFixture(b)
	ms.Update(peer.NodeID, credential.State{Generation: 4, Attributes: map[string]string{"postgres-inlet": "true"}})
	allow := policy.MustParse(`postgres-inlet and not has(quarantined)`)
	b.ReportAllocs()
	for b.Loop() {
		if err := Authorize(v, allow, peer); err != nil {
			b.Fatal(err)
		}
	}
}
