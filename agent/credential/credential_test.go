package credential

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"
	"time"
)

type testCA struct {
	key  ed25519.PrivateKey
	cert *x509.Certificate
}

func newCA(t *testing.T) testCA {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	der, err := NewAuthority(key, "proj", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{key, cert}
}

func (ca testCA) issue(t *testing.T, req Request) [][]byte {
	t.Helper()
	der, err := Issue(ca.cert, ca.key, req)
	if err != nil {
		t.Fatal(err)
	}
	return [][]byte{der}
}

func TestIssueVerify(t *testing.T) {
	ca := newCA(t)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	attrs := map[string]string{"postgres-inlet": "true", "env": "prod"}
	chain := ca.issue(t, Request{PublicKey: pub, ProjectID: "proj", Attributes: attrs, Lifetime: time.Hour})
	v := &Verifier{Root: ca.cert, ProjectID: "proj"}
	c, err := v.Verify(chain)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Attributes) != 2 || c.Attributes["env"] != "prod" || c.ProjectID != "proj" {
		t.Errorf("credential %+v", c)
	}
	if got := NodeURI("proj", c.NodeID).String(); got != c.Cert.URIs[0].String() {
		t.Errorf("URI SAN %s, want %s", c.Cert.URIs[0], got)
	}
}

func TestVerifyRefuses(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	req := Request{PublicKey: pub, ProjectID: "proj", Lifetime: time.Hour, Generation: 7}
	good := ca.issue(t, req)
	state := func(st State) func(string) (State, bool) {
		return func(string) (State, bool) { return st, true }
	}
	tests := []struct {
		name  string
		v     Verifier
		chain [][]byte
		want  error
	}{
		{"other authority", Verifier{Root: ca.cert, ProjectID: "proj"}, other.issue(t, req), ErrUntrusted},
		{"expired", Verifier{Root: ca.cert, ProjectID: "proj", Now: func() time.Time { return time.Now().Add(2 * time.Hour) }}, good, ErrExpired},
		{"other project", Verifier{Root: ca.cert, ProjectID: "proj2"}, good, ErrWrongProject},
		{"revoked", Verifier{Root: ca.cert, ProjectID: "proj", Current: state(State{Generation: 7, Revoked: true})}, good, ErrRevoked},
		{"revoked later", Verifier{Root: ca.cert, ProjectID: "proj", Current: state(State{Generation: 9, Revoked: true})}, good, ErrRevoked},
		{"stale", Verifier{Root: ca.cert, ProjectID: "proj", Current: state(State{Generation: 8})}, good, ErrStale},
		{"no certificate", Verifier{Root: ca.cert, ProjectID: "proj"}, nil, ErrUntrusted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.v.Verify(tt.chain); !errors.Is(err, tt.want) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestIssueChecksRequest(t *testing.T) {
	ca := newCA(t)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	for _, req := range []Request{
		{PublicKey: pub[:5], ProjectID: "proj", Lifetime: time.Hour},
		{PublicKey: pub, ProjectID: "proj"},
	} {
		if _, err := Issue(ca.cert, ca.key, req); err == nil {
			t.Errorf("Issue(%+v) succeeded", req)
		}
	}
}

func TestParseRejectsForeignCertificates(t *testing.T) {
	ca := newCA(t)
	if _, err := Parse(ca.cert); !errors.Is(err, ErrMalformed) {
		t.Errorf("Parse(CA) = %v, want ErrMalformed", err)
	}
}

func TestPEMRoundTrip(t *testing.T) {
	ca := newCA(t)
	certs, err := DecodePEM(EncodePEM(ca.cert.Raw, ca.cert.Raw))
	if err != nil || len(certs) != 2 || !certs[1].Equal(ca.cert) {
		t.Fatalf("DecodePEM = %d certs, %v", len(certs), err)
	}
	if _, err := DecodePEM([]byte("nothing")); err == nil {
		t.Error("DecodePEM(garbage) succeeded")
	}
}

func TestVerifyWithoutRootRefuses(t *testing.T) {
	ca := newCA(t)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	chain := ca.issue(t, Request{PublicKey: pub, ProjectID: "proj", Lifetime: time.Hour})
	v := &Verifier{ProjectID: "proj"}
	if _, err := v.Verify(chain); !errors.Is(err, ErrUntrusted) {
		t.Errorf("Verify without a root = %v, want ErrUntrusted", err)
	}
}

func TestGenerationRoundTrip(t *testing.T) {
	ca := newCA(t)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	chain := ca.issue(t, Request{PublicKey: pub, ProjectID: "proj", Lifetime: time.Hour, Generation: 42})
	cur := State{Generation: 41, Attributes: map[string]string{"old": "true"}}
	v := &Verifier{Root: ca.cert, ProjectID: "proj", Current: func(string) (State, bool) { return cur, true }}
	c, err := v.Verify(chain)
	if err != nil {
		t.Fatalf("a credential newer than the member state: %v", err)
	}
	if c.Generation != 42 {
		t.Errorf("generation %d, want 42", c.Generation)
	}
	if _, err := Issue(ca.cert, ca.key, Request{PublicKey: pub, ProjectID: "proj", Lifetime: time.Hour, Generation: 1 << 63}); err == nil {
		t.Error("a generation past int64 was issued")
	}
}

// TestAttributesFollowMemberState: after the handshake, what authorizes a
// peer is the newest word on it, never an older one, and never a revoked or
// expired credential.
func TestAttributesFollowMemberState(t *testing.T) {
	ca := newCA(t)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	der := ca.issue(t, Request{PublicKey: pub, ProjectID: "proj", Lifetime: time.Hour, Generation: 5,
		Attributes: map[string]string{"postgres-inlet": "true"}})
	var cur State
	var known bool
	now := time.Now()
	v := &Verifier{Root: ca.cert, ProjectID: "proj", Now: func() time.Time { return now },
		Current: func(string) (State, bool) { return cur, known }}
	c, err := v.Verify(der)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		known bool
		st    State
		want  string // postgres-inlet, or the error
	}{
		{"no word", false, State{}, "true"},
		{"older word", true, State{Generation: 4, Attributes: map[string]string{"postgres-inlet": "false"}}, "true"},
		{"same generation", true, State{Generation: 5, Attributes: map[string]string{"postgres-inlet": "true"}}, "true"},
		{"newer word", true, State{Generation: 6, Attributes: map[string]string{"team": "ops"}}, ""},
		{"newer word, no attributes", true, State{Generation: 6}, ""},
		{"revoked", true, State{Generation: 6, Revoked: true}, ErrRevoked.Error()},
	}
	for _, tt := range tests {
		cur, known = tt.st, tt.known
		attrs, err := v.Attributes(c)
		got := attrs["postgres-inlet"]
		if err != nil {
			got = err.Error()
			if !errors.Is(err, ErrRevoked) {
				t.Errorf("%s: %v", tt.name, err)
			}
		} else if attrs == nil {
			t.Errorf("%s: nil attributes", tt.name)
		}
		if tt.want == ErrRevoked.Error() {
			if !errors.Is(err, ErrRevoked) {
				t.Errorf("%s: %v, want %v", tt.name, err, ErrRevoked)
			}
			continue
		}
		if got != tt.want {
			t.Errorf("%s: postgres-inlet %q, want %q", tt.name, got, tt.want)
		}
	}
	cur, known = State{}, false
	now = c.Cert.NotAfter.Add(time.Second)
	if _, err := v.Attributes(c); !errors.Is(err, ErrExpired) {
		t.Errorf("after expiry: %v, want %v", err, ErrExpired)
	}
}

// TestMembersKeepsTheNewestWord: words may arrive out of order; the newest
// generation wins, and a revocation is for good.
func TestMembersKeepsTheNewestWord(t *testing.T) {
	var ms Members
	if _, ok := ms.Current("n"); ok {
		t.Fatal("an empty view knows a node")
	}
	steps := []struct {
		st      State
		applied bool
		want    State
	}{
		{State{Generation: 3, Attributes: map[string]string{"a": "1"}}, true, State{Generation: 3, Attributes: map[string]string{"a": "1"}}},
		{State{Generation: 2, Attributes: map[string]string{"a": "0"}}, false, State{Generation: 3, Attributes: map[string]string{"a": "1"}}},
		{State{Generation: 3, Attributes: map[string]string{"a": "2"}}, false, State{Generation: 3, Attributes: map[string]string{"a": "1"}}},
		{State{Generation: 5, Revoked: true}, true, State{Generation: 5, Revoked: true}},
		{State{Generation: 6, Attributes: map[string]string{"a": "3"}}, true, State{Generation: 6, Attributes: map[string]string{"a": "3"}, Revoked: true}},
	}
	for i, s := range steps {
		if got := ms.Update("n", s.st); got != s.applied {
			t.Errorf("step %d: Update = %v, want %v", i, got, s.applied)
		}
		got, _ := ms.Current("n")
		if got.Generation != s.want.Generation || got.Revoked != s.want.Revoked || got.Attributes["a"] != s.want.Attributes["a"] {
			t.Errorf("step %d: %+v, want %+v", i, got, s.want)
		}
	}
}
