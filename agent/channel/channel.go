// Package channel builds the end-to-end secure channel between two agents:
// mutual TLS 1.3 in which each side verifies the peer's credential against the
// project authority and then its own policy on the peer's attributes, before
// a byte of application data moves. The hub between them sees only ciphertext.
package channel

import (
	"crypto/tls"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/internal/alpn"
	"github.com/sluicehq/sluice/agent/policy"
)

// ALPN is the application protocol of agent-to-agent channels.
const ALPN = "sluice-portal/2"

// Sentinel errors of channel authorization.
var (
	// ErrDenied means the peer's credential is valid but the policy refuses it.
	ErrDenied = errors.New("peer is not allowed by policy")
	// ErrWrongPeer means the peer is not the node the hub said it would be.
	ErrWrongPeer = errors.New("peer is not the node that owns the relay")
	// ErrNoOutlet means the server has no outlet by the requested name.
	ErrNoOutlet = errors.New("no such outlet")
	// ErrProtocol means the peer did not negotiate the channel's ALPN:
	// it is not an agent's end of a channel.
	ErrProtocol = alpn.ErrMismatch
)

// Keys holds the agent's current credential; swapping it affects new
// handshakes only.
type Keys struct {
	cert atomic.Pointer[tls.Certificate]
}

// Set installs a credential and its private key.
func (k *Keys) Set(c *tls.Certificate) { k.cert.Store(c) }

// Get returns the current credential, or nil.
func (k *Keys) Get() *tls.Certificate { return k.cert.Load() }

func (k *Keys) certificate() (*tls.Certificate, error) {
	c := k.cert.Load()
	if c == nil {
		return nil, errors.New("this agent holds no credential yet")
	}
	return c, nil
}

// Client returns the TLS configuration of an inlet: it presents the agent's
// credential, asks for outlet serverName, and accepts the peer only if it
// negotiated ALPN, its credential is valid, it is node expectNode (when not
// empty), and allow permits its attributes.
func Client(keys *Keys, v *credential.Verifier, serverName, expectNode string, allow *policy.Policy) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		ServerName:             serverName,
		NextProtos:             []string{ALPN},
		InsecureSkipVerify:     true, // replaced by VerifyConnection below
		SessionTicketsDisabled: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return keys.certificate()
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := alpn.Require(cs, ALPN); err != nil {
				return err
			}
			peer, err := v.Verify(rawOf(cs))
			if err != nil {
				return err
			}
			if expectNode != "" && peer.NodeID != expectNode {
				return fmt.Errorf("verify outlet: node %s, want %s: %w", peer.NodeID, expectNode, ErrWrongPeer)
			}
			return Authorize(v, allow, peer)
		},
	}
}

// Server returns the TLS configuration of an agent's outlets. The handshake
// authenticates the inlet's agent (it negotiated ALPN, its credential is the
// project's and it holds its key) and nothing more: the outlet authorizes it afterwards
// (Admit), so that whether a policy admits a node is told only to a peer
// that proved it is that node, in an authenticated record.
func Server(keys *Keys, v *credential.Verifier) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		NextProtos:             []string{ALPN},
		ClientAuth:             tls.RequireAnyClientCert, // verified in VerifyConnection
		SessionTicketsDisabled: true,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return keys.certificate()
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := alpn.Require(cs, ALPN); err != nil {
				return err
			}
			_, err := v.Authenticate(rawOf(cs))
			return err
		},
	}
}

// Admit authorizes the peer of a new channel: its credential must be the
// node's current one (v.Check) and p must allow its attributes.
func Admit(v *credential.Verifier, p *policy.Policy, peer *credential.Credential) error {
	if err := v.Check(peer); err != nil {
		return err
	}
	return Authorize(v, p, peer)
}

// Authorize applies a policy to a verified peer, as the project knows the
// peer now (v.Attributes): at the handshake, and again for every stream a
// channel carries afterwards. A revoked or expired peer is refused with the
// verifier's error, one whose attributes fail p with ErrDenied.
func Authorize(v *credential.Verifier, p *policy.Policy, peer *credential.Credential) error {
	attrs, err := v.Attributes(peer)
	if err != nil {
		return err
	}
	if !p.Allows(attrs) {
		return fmt.Errorf("authorize node %s: %s: %w", peer.NodeID, p.Explain(attrs), ErrDenied)
	}
	return nil
}

// Peer returns the verified peer credential of a finished handshake.
func Peer(cs tls.ConnectionState) (*credential.Credential, error) {
	if len(cs.PeerCertificates) == 0 {
		return nil, errors.New("peer presented no certificate")
	}
	return credential.Parse(cs.PeerCertificates[0])
}

func rawOf(cs tls.ConnectionState) [][]byte {
	raw := make([][]byte, len(cs.PeerCertificates))
	for i, c := range cs.PeerCertificates {
		raw[i] = c.Raw
	}
	return raw
}
