package channel_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/channel"
	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/policy"
)

// These tests present bad credentials from a real channel.Client and
// channel.Server pair over loopback TCP, on either side, and check what
// each side reports and that no application byte crosses.

const projectID = "proj"

// authority is a project CA.
type authority struct {
	cert *x509.Certificate
	key  ed25519.PrivateKey
}

func newAuthority(t *testing.T) *authority {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	der, err := credential.NewAuthority(key, projectID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &authority{cert: cert, key: key}
}

// issue returns a credential for a new node key, from req (its key set here).
func (a *authority) issue(t *testing.T, req credential.Request) *tls.Certificate {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	req.PublicKey = pub
	if req.ProjectID == "" {
		req.ProjectID = projectID
	}
	if req.Lifetime == 0 {
		req.Lifetime = time.Hour
	}
	der, err := credential.Issue(a.cert, a.key, req)
	if err != nil {
		t.Fatal(err)
	}
	return certificate(t, der, priv)
}

// handMade returns a certificate signed by a for a new node key, built from
// the template edit fills in (its URI and validity preset for the key).
func (a *authority) handMade(t *testing.T, edit func(tmpl *x509.Certificate, node string)) *tls.Certificate {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	node := identity.NodeID(pub)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: node},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:         []*url.URL{credential.NodeURI(projectID, node)},
	}
	edit(tmpl, node)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, pub, a.key)
	if err != nil {
		t.Fatal(err)
	}
	return certificate(t, der, priv)
}

func certificate(t *testing.T, der []byte, key ed25519.PrivateKey, chain ...[]byte) *tls.Certificate {
	t.Helper()
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: append([][]byte{der}, chain...), PrivateKey: key, Leaf: leaf}
}

// end is one agent of a channel: what it presents and how it verifies.
type end struct {
	keys    channel.Keys
	members credential.Members
	v       *credential.Verifier
}

func newEnd(a *authority, cert *tls.Certificate) *end {
	e := &end{}
	e.keys.Set(cert)
	e.v = &credential.Verifier{Root: a.cert, ProjectID: projectID, Current: e.members.Current}
	return e
}

// node is the node ID of the credential e presents.
func (e *end) node(t *testing.T) string {
	t.Helper()
	c, err := credential.Parse(e.keys.Get().Leaf)
	if err != nil {
		t.Fatal(err)
	}
	return c.NodeID
}

// outcome is how a channel attempt ended on each side.
type outcome struct {
	inlet  error  // the inlet's handshake, or its first read after it
	outlet error  // the outlet's handshake, or its authorization after it (channel.Admit)
	got    []byte // application bytes the outlet received
}

const secret = "application bytes"

// attempt runs an inlet (client) and an outlet (server) over loopback TCP.
// The outlet does what a portal outlet does: the handshake, then Admit; if
// both pass it reads the stream. The inlet sends secret once its handshake
// has passed, and reads the outlet's answer. edit, if set, changes the TLS
// configurations first.
func attempt(t *testing.T, in, out *end, edit func(client, server *tls.Config)) outcome {
	t.Helper()
	allow := policy.MustParse("true")
	cconf := channel.Client(&in.keys, in.v, "web", "", allow)
	sconf := channel.Server(&out.keys, out.v)
	if edit != nil {
		edit(cconf, sconf)
	}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type served struct {
		err error
		got []byte
	}
	done := make(chan served, 1)
	go func() {
		raw, err := ln.AcceptTCP()
		if err != nil {
			done <- served{err: err}
			return
		}
		defer raw.Close()
		raw.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(channel.Boundary(raw), sconf)
		if err := tc.Handshake(); err != nil {
			done <- served{err: err}
			return
		}
		peer, err := channel.Peer(tc.ConnectionState())
		if err == nil {
			err = channel.Admit(out.v, allow, peer)
		}
		if err != nil {
			done <- served{err: err}
			return
		}
		ch, err := channel.NewConn(raw, tc, false)
		if err != nil {
			done <- served{err: err}
			return
		}
		got, err := io.ReadAll(ch)
		if err == nil {
			err = ch.CloseWrite()
		}
		done <- served{err: err, got: got}
	}()
	raw, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	var o outcome
	tc := tls.Client(channel.Boundary(raw), cconf)
	if o.inlet = tc.Handshake(); o.inlet == nil {
		ch, err := channel.NewConn(raw, tc, true)
		if err != nil {
			t.Fatal(err)
		}
		ch.Write([]byte(secret)) // may fail once the outlet has refused
		ch.CloseWrite()
		_, o.inlet = io.ReadAll(ch)
	}
	s := <-done
	o.outlet, o.got = s.err, s.got
	return o
}

// badCredential is a credential an agent must refuse, from whichever side
// presents it.
type badCredential struct {
	name string
	want error
	// make returns the bad end, given the project's authority; setup, if
	// set, tells the verifying end about it (the authority's word).
	make  func(t *testing.T, a *authority) *end
	setup func(t *testing.T, verifier, bad *end)
}

func badCredentials() []badCredential {
	return []badCredential{
		{name: "foreign authority", want: credential.ErrUntrusted, make: func(t *testing.T, a *authority) *end {
			other := newAuthority(t) // same project ID, another key
			return newEnd(a, other.issue(t, credential.Request{}))
		}},
		{name: "other project", want: credential.ErrWrongProject, make: func(t *testing.T, a *authority) *end {
			return newEnd(a, a.issue(t, credential.Request{ProjectID: "other"}))
		}},
		{name: "expired", want: credential.ErrExpired, make: func(t *testing.T, a *authority) *end {
			return newEnd(a, a.issue(t, credential.Request{Now: time.Now().Add(-2 * time.Hour), Lifetime: time.Hour}))
		}},
		{name: "revoked", want: credential.ErrRevoked, make: func(t *testing.T, a *authority) *end {
			return newEnd(a, a.issue(t, credential.Request{Generation: 1}))
		}, setup: func(t *testing.T, verifier, bad *end) {
			verifier.members.Update(bad.node(t), credential.State{Generation: 2, Revoked: true})
		}},
		{name: "stale", want: credential.ErrStale, make: func(t *testing.T, a *authority) *end {
			return newEnd(a, a.issue(t, credential.Request{Generation: 1}))
		}, setup: func(t *testing.T, verifier, bad *end) {
			verifier.members.Update(bad.node(t), credential.State{Generation: 2})
		}},
		{name: "node ID not its key's", want: credential.ErrMalformed, make: func(t *testing.T, a *authority) *end {
			return newEnd(a, a.handMade(t, func(tmpl *x509.Certificate, _ string) {
				other, _, _ := ed25519.GenerateKey(rand.Reader)
				tmpl.URIs = []*url.URL{credential.NodeURI(projectID, identity.NodeID(other))}
			}))
		}},
		{name: "malformed attributes", want: credential.ErrMalformed, make: func(t *testing.T, a *authority) *end {
			return newEnd(a, a.handMade(t, func(tmpl *x509.Certificate, _ string) {
				notAList, _ := asn1.Marshal(42)
				tmpl.ExtraExtensions = []pkix.Extension{{Id: credential.AttributesOID, Value: notAList}}
			}))
		}},
		{name: "the hub's server certificate", want: credential.ErrMalformed, make: func(t *testing.T, a *authority) *end {
			pub, priv, _ := ed25519.GenerateKey(rand.Reader)
			der, err := credential.IssueServer(a.cert, a.key, pub, "127.0.0.1", time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			return newEnd(a, certificate(t, der, priv, a.cert.Raw)) // the chain the hub presents
		}},
	}
}

// TestGoodPair: the harness carries application bytes between good ends.
func TestGoodPair(t *testing.T) {
	a := newAuthority(t)
	o := attempt(t, newEnd(a, a.issue(t, credential.Request{})), newEnd(a, a.issue(t, credential.Request{})), nil)
	if o.inlet != nil || o.outlet != nil || string(o.got) != secret {
		t.Fatalf("inlet %v, outlet %v, outlet got %q; want %q across", o.inlet, o.outlet, o.got, secret)
	}
}

// TestBadInletCredential: the outlet refuses the inlet's credential with
// the exact reason, the inlet hears the outlet's alert (ErrPeerAlert: it
// comes after the inlet's side of a TLS 1.3 handshake, unauthenticated, so
// never a refusal), and no application byte reaches the outlet.
func TestBadInletCredential(t *testing.T) {
	for _, c := range badCredentials() {
		t.Run(c.name, func(t *testing.T) {
			a := newAuthority(t)
			out := newEnd(a, a.issue(t, credential.Request{}))
			in := c.make(t, a)
			if c.setup != nil {
				c.setup(t, out, in)
			}
			o := attempt(t, in, out, nil)
			if !errors.Is(o.outlet, c.want) {
				t.Errorf("the outlet reported %v, want %v", o.outlet, c.want)
			}
			if len(o.got) != 0 {
				t.Errorf("the outlet received %q", o.got)
			}
			if c.setup == nil && !errors.Is(o.inlet, channel.ErrPeerAlert) {
				// Refused in the handshake. A revoked or stale inlet is
				// refused after it (Admit), in a status record that is the
				// portal's (agent/portal TestBadInletCredential).
				t.Errorf("the inlet reported %v, want %v", o.inlet, channel.ErrPeerAlert)
			}
		})
	}
}

// TestBadOutletCredential: the inlet refuses the outlet's credential in the
// handshake with the exact reason, before it sends anything; the outlet
// hears the inlet's bad_certificate alert.
func TestBadOutletCredential(t *testing.T) {
	for _, c := range badCredentials() {
		t.Run(c.name, func(t *testing.T) {
			a := newAuthority(t)
			in := newEnd(a, a.issue(t, credential.Request{}))
			out := c.make(t, a)
			if c.setup != nil {
				c.setup(t, in, out)
			}
			o := attempt(t, in, out, nil)
			if !errors.Is(o.inlet, c.want) {
				t.Errorf("the inlet reported %v, want %v", o.inlet, c.want)
			}
			if !isAlert(o.outlet, "bad certificate") {
				t.Errorf("the outlet reported %v, want the inlet's bad_certificate alert", o.outlet)
			}
			if len(o.got) != 0 {
				t.Errorf("the outlet received %q", o.got)
			}
		})
	}
}

// TestALPNRequired: an end that does not negotiate the channel's ALPN is
// refused by the other, whichever it is.
func TestALPNRequired(t *testing.T) {
	a := newAuthority(t)
	in, out := newEnd(a, a.issue(t, credential.Request{})), newEnd(a, a.issue(t, credential.Request{}))
	t.Run("inlet offers none", func(t *testing.T) {
		// A TLS client of another kind, which checks nothing either.
		o := attempt(t, in, out, func(c, _ *tls.Config) { c.NextProtos, c.VerifyConnection = nil, nil })
		if !errors.Is(o.outlet, channel.ErrProtocol) {
			t.Errorf("the outlet reported %v, want %v", o.outlet, channel.ErrProtocol)
		}
		if !errors.Is(o.inlet, channel.ErrPeerAlert) || len(o.got) != 0 {
			t.Errorf("the inlet reported %v, the outlet received %q; want the outlet's alert and nothing", o.inlet, o.got)
		}
	})
	t.Run("outlet selects none", func(t *testing.T) {
		o := attempt(t, in, out, func(_, s *tls.Config) { s.NextProtos = nil })
		if !errors.Is(o.inlet, channel.ErrProtocol) {
			t.Errorf("the inlet reported %v, want %v", o.inlet, channel.ErrProtocol)
		}
		if !isAlert(o.outlet, "bad certificate") || len(o.got) != 0 {
			t.Errorf("the outlet reported %v and received %q; want the inlet's alert and nothing", o.outlet, o.got)
		}
	})
}

// isAlert reports whether err is a TLS alert the peer sent, of the given
// description.
func isAlert(err error, desc string) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error" && op.Err.Error() == "tls: "+desc
}
