package credential

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Verifier checks that certificates presented by peers are valid credentials of
// one project. The zero value is not usable; set Root and ProjectID.
type Verifier struct {
	Root      *x509.Certificate        // the project authority
	ProjectID string                   // credentials of other projects are refused
	Now       func() time.Time         // nil means time.Now
	Revoked   func(nodeID string) bool // nil means nothing is revoked
}

// ErrRevoked means the authority revoked the node's membership.
var ErrRevoked = errors.New("credential was revoked")

// Verify checks a peer's certificate chain (leaf first, as TLS delivers it) and
// returns the leaf as a credential.
func (v *Verifier) Verify(rawCerts [][]byte) (*Credential, error) {
	if len(rawCerts) == 0 {
		return nil, fmt.Errorf("verify credential: peer sent no certificate: %w", ErrUntrusted)
	}
	leaf, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return nil, fmt.Errorf("verify credential: %w", err)
	}
	return v.VerifyCert(leaf)
}

// VerifyCert checks one leaf certificate issued directly by the authority.
func (v *Verifier) VerifyCert(leaf *x509.Certificate) (*Credential, error) {
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	if v.Root == nil {
		return nil, fmt.Errorf("verify credential of %s: no authority to verify against: %w", leaf.Subject.CommonName, ErrUntrusted)
	}
	if err := leaf.CheckSignatureFrom(v.Root); err != nil {
		return nil, fmt.Errorf("verify credential of %s: %w", leaf.Subject.CommonName, ErrUntrusted)
	}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("verify credential of %s (valid %s to %s): %w", leaf.Subject.CommonName,
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339), ErrExpired)
	}
	c, err := Parse(leaf)
	if err != nil {
		return nil, err
	}
	if c.ProjectID != v.ProjectID {
		return nil, fmt.Errorf("verify credential of %s (project %q, want %q): %w", c.NodeID, c.ProjectID, v.ProjectID, ErrWrongProject)
	}
	if v.Revoked != nil && v.Revoked(c.NodeID) {
		return nil, fmt.Errorf("verify credential of %s: %w", c.NodeID, ErrRevoked)
	}
	return c, nil
}
