package credential

import (
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Verifier checks that certificates presented by peers are valid credentials of
// one project. The zero value is not usable; set Root and ProjectID.
type Verifier struct {
	Root      *x509.Certificate // the project authority
	ProjectID string            // credentials of other projects are refused
	Now       func() time.Time  // nil means time.Now
	// Current returns the authority's latest word on a node as this agent
	// heard it, and false if it heard none; nil means it heard nothing.
	Current func(nodeID string) (State, bool)
}

// State is the authority's word on a node: a credential is only a cache of
// it. Generations order words about the same node.
type State struct {
	Generation uint64
	Attributes map[string]string
	Revoked    bool
}

var (
	// ErrRevoked means the authority revoked the node's membership.
	ErrRevoked = errors.New("credential was revoked")
	// ErrStale means the authority has said something newer about the
	// node than its credential: the node must present a fresh one.
	ErrStale = errors.New("credential is older than the node's current member state")
)

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

func (v *Verifier) current(node string) (State, bool) {
	if v.Current == nil {
		return State{}, false
	}
	return v.Current(node)
}

// Attributes returns what a verified peer's attributes are now: the
// authority's latest word on the node if it is as new as the credential or
// newer, else the credential's own. It fails if the node was revoked or the
// credential has expired since it was verified. Every authorization after
// the handshake (each new stream on a channel) goes through it.
func (v *Verifier) Attributes(c *Credential) (map[string]string, error) {
	if now := v.now(); now.After(c.Cert.NotAfter) {
		return nil, fmt.Errorf("authorize node %s: credential expired at %s: %w", c.NodeID,
			c.Cert.NotAfter.UTC().Format(time.RFC3339), ErrExpired)
	}
	st, ok := v.current(c.NodeID)
	switch {
	case !ok || st.Generation < c.Generation:
		return c.Attributes, nil
	case st.Revoked:
		return nil, fmt.Errorf("authorize node %s: %w", c.NodeID, ErrRevoked)
	case st.Attributes == nil:
		return map[string]string{}, nil
	}
	return st.Attributes, nil
}

// Verify checks a peer's certificate chain (leaf first, as TLS delivers it)
// and returns the leaf as a credential: Authenticate, then Check.
func (v *Verifier) Verify(rawCerts [][]byte) (*Credential, error) {
	c, err := v.Authenticate(rawCerts)
	if err != nil {
		return nil, err
	}
	if err := v.Check(c); err != nil {
		return nil, err
	}
	return c, nil
}

// Authenticate checks who a peer's credential says it is, and nothing about
// what the project says of the node now: the leaf (first) certificate must
// be signed by the authority, valid now and of the project.
func (v *Verifier) Authenticate(rawCerts [][]byte) (*Credential, error) {
	if len(rawCerts) == 0 {
		return nil, fmt.Errorf("verify credential: peer sent no certificate: %w", ErrUntrusted)
	}
	leaf, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return nil, fmt.Errorf("verify credential: %w", err)
	}
	now := v.now()
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
	return c, nil
}

// Check refuses an authenticated credential that the project's member state
// has overtaken: its node was revoked, or the authority has said something
// newer about the node than the credential carries (ErrStale).
func (v *Verifier) Check(c *Credential) error {
	st, ok := v.current(c.NodeID)
	switch {
	case !ok:
		return nil
	case st.Revoked:
		return fmt.Errorf("verify credential of %s: %w", c.NodeID, ErrRevoked)
	case c.Generation < st.Generation:
		return fmt.Errorf("verify credential of %s: issued at generation %d, the node's member state is at %d: %w",
			c.NodeID, c.Generation, st.Generation, ErrStale)
	}
	return nil
}

// Members is an agent's view of the project's member state: the newest word
// it heard on each node. Its Current method is what a Verifier's Current
// needs. The zero value is empty and ready; it is safe for concurrent use.
type Members struct {
	mu    sync.Mutex // guards nodes
	nodes map[string]State
}

// Update records a word on node unless a word of the same or a newer
// generation is already known, and reports whether it did. A revocation is
// for good: words after it keep the node revoked.
func (ms *Members) Update(node string, st State) bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	old, ok := ms.nodes[node]
	if ok && old.Generation >= st.Generation {
		return false
	}
	if ms.nodes == nil {
		ms.nodes = map[string]State{}
	}
	st.Revoked = st.Revoked || old.Revoked
	ms.nodes[node] = st
	return true
}

// Current returns the newest word on node, and false if none was heard.
func (ms *Members) Current(node string) (State, bool) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	st, ok := ms.nodes[node]
	return st, ok
}
