package portal_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/sluicehq/sluice/agent/channel"
	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/portal"
)

// Bad credentials presented by a real agent on either end of a channel:
// each is refused with the exact reason, and no byte of the app's reaches
// the target.

// badCred is a credential an agent's peer must refuse. present makes the
// agent of n present it; the hub of s is the project's.
type badCred struct {
	name    string
	want    error
	present func(t *testing.T, s *standard, n *node)
}

func badCreds() []badCred {
	return []badCred{
		{"foreign authority", credential.ErrUntrusted, func(t *testing.T, s *standard, n *node) {
			_, key, _ := ed25519.GenerateKey(rand.Reader)
			der, err := credential.NewAuthority(key, s.h.Project.ID, time.Hour) // the project's ID, another key
			if err != nil {
				t.Fatal(err)
			}
			other, _ := x509.ParseCertificate(der)
			present(t, n, issue(t, other, key, n, credential.Request{}))
		}},
		{"expired", credential.ErrExpired, func(t *testing.T, s *standard, n *node) {
			present(t, n, issue(t, s.h.Project.Cert, s.h.Project.Key, n, credential.Request{Now: time.Now().Add(-2 * time.Hour)}))
		}},
		{"revoked", credential.ErrRevoked, func(t *testing.T, s *standard, n *node) {
			// The node keeps presenting the credential it had.
			m, err := s.h.Relay().Revoke(n.Identity.ID())
			if err != nil || !m.Revoked {
				t.Fatalf("revoke: %+v, %v", m, err)
			}
			heard(t, s.h, s.peerOf(n).Agent, n.Identity.ID())
		}},
		{"node ID not its key's", credential.ErrMalformed, func(t *testing.T, s *standard, n *node) {
			other, _, _ := ed25519.GenerateKey(rand.Reader)
			present(t, n, handMade(t, s, n, func(tmpl *x509.Certificate) {
				tmpl.URIs = []*url.URL{credential.NodeURI(s.h.Project.ID, identity.NodeID(other))}
			}))
		}},
		{"malformed attributes", credential.ErrMalformed, func(t *testing.T, s *standard, n *node) {
			notAList, _ := asn1.Marshal(42)
			present(t, n, handMade(t, s, n, func(tmpl *x509.Certificate) {
				tmpl.ExtraExtensions = []pkix.Extension{{Id: credential.AttributesOID, Value: notAList}}
			}))
		}},
		{"the hub's server certificate", credential.ErrMalformed, func(t *testing.T, s *standard, n *node) {
			p := s.h.Project
			n.Keys.Set(&tls.Certificate{Certificate: [][]byte{p.HubCert.Raw, p.Cert.Raw}, PrivateKey: p.HubKey, Leaf: p.HubCert})
		}},
	}
}

// peerOf is the other agent of the pair.
func (s *standard) peerOf(n *node) *node {
	if n == s.in {
		return s.out
	}
	return s.in
}

// issue signs a credential of ca for n's key, with the attributes of the
// agent's current one.
func issue(t *testing.T, ca *x509.Certificate, key ed25519.PrivateKey, n *node, req credential.Request) []byte {
	t.Helper()
	req.PublicKey, req.ProjectID = n.Identity.PublicKey(), n.Grant.Project
	req.Attributes, req.Lifetime = n.Grant.Attributes, time.Hour
	der, err := credential.Issue(ca, key, req)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// handMade is a certificate for n's key signed by the project's authority,
// as edit makes it of a credential's template.
func handMade(t *testing.T, s *standard, n *node, edit func(*x509.Certificate)) []byte {
	t.Helper()
	id := n.Identity.ID()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: id},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:         []*url.URL{credential.NodeURI(s.h.Project.ID, id)},
	}
	edit(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.h.Project.Cert, n.Identity.PublicKey(), s.h.Project.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// present makes n's agent present der on its channels.
func present(t *testing.T, n *node, der []byte) {
	t.Helper()
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	n.Keys.Set(&tls.Certificate{Certificate: [][]byte{der}, PrivateKey: n.Identity.PrivateKey(), Leaf: leaf})
}

// directInlet serves the outlet agent's direct listener and adds an inlet
// "bad" to it: the channel goes straight from one agent to the other, so
// that even a node the hub no longer serves (revoked) can present its
// credential.
func (s *standard) directInlet(t *testing.T) string {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // last: the agents' managers end the channels first
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	wg.Go(func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			wg.Go(func() { s.out.m.ServeDirect(c) })
		}
	})
	return s.in.inlet(t, portal.InletSpec{Name: "bad", Direct: ln.Addr().String(), Outlet: "web", Allow: "web-outlet"})
}

// loggedError returns the error n logged with msg, or nil.
func (n *node) loggedError(msg string) error {
	for _, e := range n.logs.FilterMessage(msg).All() {
		for _, f := range e.Context {
			if f.Type == zapcore.ErrorType {
				return f.Interface.(error)
			}
		}
	}
	return nil
}

// waitLogged waits until n logged msg and returns its error.
func (n *node) waitLogged(t *testing.T, msg string) error {
	t.Helper()
	var err error
	if !testhub.WaitFor(wait, func() bool { err = n.loggedError(msg); return err != nil }) {
		t.Errorf("the agent did not log %q:\n%s", msg, n.logText())
	}
	return err
}

// TestBadInletCredential: the outlet refuses each bad inlet credential with
// its exact reason; the inlet counts what it could authenticate as a
// refusal and an alert as a failure; nothing reaches the target.
func TestBadInletCredential(t *testing.T) {
	for _, c := range badCreds() {
		t.Run(c.name, func(t *testing.T) {
			s := newStandard(t, nil, "")
			addr := s.directInlet(t)
			c.present(t, s, s.in)
			refusedAt(t, addr, []byte("secret"))
			// A credential that does not authenticate is refused in the
			// handshake; a revoked one once the handshake proved it is the
			// node's, in a status record.
			msg := "outlet refused a channel"
			if errors.Is(c.want, credential.ErrRevoked) {
				msg = "outlet refused a connection"
			}
			if err := s.out.waitLogged(t, msg); !errors.Is(err, c.want) {
				t.Errorf("the outlet refused with %v, want %v", err, c.want)
			}
			got := settled(t, "inlet", func() portal.CounterValues { return s.in.inletCounters(t, "bad") })
			// A revoked node hears the outlet's authenticated refusal; the
			// others an unauthenticated TLS alert, which may as well come
			// from someone on the path: a failure, explained, not a refusal.
			want, counted := channel.ErrPeerAlert, portal.CounterValues{Accepted: 1, Failed: 1}
			if errors.Is(c.want, credential.ErrRevoked) {
				want, counted = channel.ErrDenied, portal.CounterValues{Accepted: 1, Refused: 1}
			}
			if got.Refused != counted.Refused || got.Failed != counted.Failed {
				t.Errorf("inlet counters %+v, want refused %d, failed %d\n%s", got, counted.Refused, counted.Failed, s.in.logText())
			}
			var err error
			for _, msg := range []string{"inlet connection ended with an error", "inlet connection refused", "inlet connection failed"} {
				if err = s.in.loggedError(msg); errors.Is(err, want) {
					break
				}
			}
			if !errors.Is(err, want) {
				t.Errorf("the inlet reported %v, want %v\n%s", err, want, s.in.logText())
			}
			if n := s.tg.accepted.Load(); n != 0 {
				t.Errorf("the target accepted %d connections", n)
			}
			if o := s.out.outletCounters(t, "web"); o.BytesIn != 0 || o.Accepted != 0 {
				t.Errorf("outlet counters %+v, want nothing carried", o)
			}
		})
	}
}

// TestBadOutletCredential: the inlet refuses each bad outlet credential in
// the handshake with its exact reason, before the app's bytes leave it;
// nothing reaches the target.
func TestBadOutletCredential(t *testing.T) {
	for _, c := range badCreds() {
		t.Run(c.name, func(t *testing.T) {
			s := newStandard(t, nil, "")
			addr := s.directInlet(t)
			c.present(t, s, s.out)
			refusedAt(t, addr, []byte("secret"))
			if err := s.in.waitLogged(t, "inlet connection refused"); !errors.Is(err, c.want) {
				t.Errorf("the inlet refused with %v, want %v", err, c.want)
			}
			if err := s.out.waitLogged(t, "outlet refused a channel"); err == nil || !isBadCertAlert(err) {
				t.Errorf("the outlet reported %v, want the inlet's bad_certificate alert", err)
			}
			if n := s.tg.accepted.Load(); n != 0 {
				t.Errorf("the target accepted %d connections", n)
			}
			if o := s.out.outletCounters(t, "web"); o.BytesIn != 0 || o.Accepted != 0 {
				t.Errorf("outlet counters %+v, want nothing carried", o)
			}
		})
	}
}

// isBadCertAlert reports whether err is the peer's bad_certificate alert.
func isBadCertAlert(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error" && op.Err.Error() == "tls: bad certificate"
}
