package authority

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/wire"
)

// exchangeFixture is an authority with a member, a revoked member and
// tickets: valid ones (of several uses and of one), an expired one and one
// of another project. uses counts the redemptions the fuzz inputs made.
type exchangeFixture struct {
	svc             *Service
	member, revoked ed25519.PrivateKey
	valid           map[string]*wire.Ticket // by ID: genuine, unexpired
	uses            map[string]int
	tickets         []string // encoded: the valid ones, the expired one, the foreign one
}

func newExchangeFixture(f *testing.F) *exchangeFixture {
	p, err := Init(f.TempDir(), "127.0.0.1:4443")
	if err != nil {
		f.Fatal(err)
	}
	a, err := Open(p, Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { a.Close() })
	x := &exchangeFixture{svc: NewService(a), valid: map[string]*wire.Ticket{}, uses: map[string]int{}}
	ticket := func(p *Project, opts TicketOptions) (string, *wire.Ticket) {
		s, t, err := p.NewTicket(opts)
		if err != nil {
			f.Fatal(err)
		}
		x.tickets = append(x.tickets, s)
		return s, t
	}
	for _, opts := range []TicketOptions{
		{Attributes: map[string]string{"role": "inlet"}, Usage: maxTicketUsage},
		{Attributes: map[string]string{"role": "outlet"}, Relays: []string{"pg"}, Usage: 1},
	} {
		_, t := ticket(p, opts)
		x.valid[t.ID] = t
	}
	ticket(p, TicketOptions{ExpiresIn: time.Nanosecond})
	other, err := Init(f.TempDir(), "127.0.0.1:4443")
	if err != nil {
		f.Fatal(err)
	}
	ticket(other, TicketOptions{})
	// The member and the revoked one enroll with a ticket of their own.
	for _, k := range []*ed25519.PrivateKey{&x.member, &x.revoked} {
		_, *k, _ = ed25519.GenerateKey(rand.Reader)
		s, _, err := p.NewTicket(TicketOptions{Attributes: map[string]string{"m": "1"}})
		if err != nil {
			f.Fatal(err)
		}
		if _, err := a.Redeem(s, k.Public().(ed25519.PublicKey)); err != nil {
			f.Fatal(err)
		}
	}
	if _, err := a.Revoke(identity.NodeID(x.revoked.Public().(ed25519.PublicKey))); err != nil {
		f.Fatal(err)
	}
	return x
}

// FuzzExchange feeds arbitrary request bodies to the authority's exchange,
// as one of three nodes (the handshake proved it holds the key): a node
// never seen before, a member, a revoked member. The body is read as
// Exchange reads it; a request it can decode gets an answer that is either
// a credential for that node, or a refusal with a code an agent can act on
// (never "internal": nothing here is the authority's own failure). A
// credential goes only to the member (hello, renew, or enroll with a valid
// ticket) or to a new node that enrolled with a valid ticket with uses
// left, and carries the node's key, project and attributes.
func FuzzExchange(f *testing.F) {
	x := newExchangeFixture(f)
	for _, body := range []string{
		`{"op":"hello"}`,
		`{"op":"renew","generation":3}`,
		`{"op":"enroll"}`,
		`{"op":"enroll","ticket":""}`,
		`{"op":"enroll","ticket":"sluice-ticket-v1.e30.AAAA"}`,
		`{"op":"Hello"}`,
		`{"op":""}`,
		`{}`,
		`null`,
		`{"op":"hello","generation":18446744073709551615}`,
		`{"op":"enroll","ticket":null,"extra":[1,2,3]}`,
		"{\"op\":\"\xff\"}",
		`[`,
	} {
		for who := range byte(3) {
			f.Add([]byte(body), who)
		}
	}
	for _, s := range x.tickets {
		for who := range byte(3) {
			f.Add(fmt.Appendf(nil, `{"op":"enroll","ticket":%q}`, s), who)
			f.Add(fmt.Appendf(nil, `{"op":"enroll","ticket":%q}`, " \n"+s+"\r\n"), who)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, who byte) {
		var key ed25519.PrivateKey
		switch who % 3 {
		case 0:
			_, key, _ = ed25519.GenerateKey(rand.Reader) // a new node
		case 1:
			key = x.member
		case 2:
			key = x.revoked
		}
		pub := key.Public().(ed25519.PublicKey)
		var req wire.ExchangeRequest
		if err := json.NewDecoder(io.LimitReader(bytes.NewReader(body), maxExchangeRequest)).Decode(&req); err != nil {
			return // Exchange closes without an answer
		}
		// What the request may get.
		var granted *wire.Ticket // the valid ticket an enrollment redeems
		if req.Op == wire.OpEnroll {
			if tk, err := wire.ParseTicket(req.Ticket); err == nil && x.valid[tk.ID] != nil &&
				bytes.Equal(tk.AuthorityKey, x.svc.Project().AuthorityPublicKey()) && x.uses[tk.ID] < tk.Usage {
				granted = tk
			}
		}
		mayGet := false
		switch who % 3 {
		case 0:
			mayGet = granted != nil
		case 1:
			mayGet = req.Op == wire.OpHello || req.Op == wire.OpRenew || granted != nil
		}

		reply, cause := x.svc.answer(pub, &req)
		if reply == nil {
			t.Fatalf("%q as node %d: no reply", body, who%3)
		}
		if reply.Credential == nil {
			if reply.Error == "" || reply.Code == "" || cause == nil {
				t.Fatalf("%q as node %d: neither a credential nor a refusal: %+v, %v", body, who%3, reply, cause)
			}
			if reply.Code == "internal" {
				t.Fatalf("%q as node %d: refused as the authority's own failure: %v", body, who%3, cause)
			}
			if mayGet {
				t.Fatalf("%q as node %d: refused (%s: %v), want a credential", body, who%3, reply.Code, cause)
			}
			return
		}
		if !mayGet || cause != nil || reply.Error != "" {
			t.Fatalf("%q as node %d: got a credential (%v, %q); want a refusal", body, who%3, cause, reply.Error)
		}
		if granted != nil {
			x.uses[granted.ID]++
		}
		cred, err := credential.ParseDER(reply.Credential)
		if err != nil {
			t.Fatalf("%q: the credential does not parse: %v", body, err)
		}
		if cred.NodeID != identity.NodeID(pub) || reply.Node != cred.NodeID || cred.ProjectID != x.svc.Project().ID {
			t.Fatalf("%q: credential for node %s of project %s (reply says %s), want %s of %s",
				body, cred.NodeID, cred.ProjectID, reply.Node, identity.NodeID(pub), x.svc.Project().ID)
		}
		if !bytes.Equal(cred.Cert.PublicKey.(ed25519.PublicKey), pub) {
			t.Fatalf("%q: the credential certifies another key", body)
		}
		if granted != nil {
			for k, v := range granted.Attributes {
				if cred.Attributes[k] != v {
					t.Fatalf("%q: credential attributes %v lack the ticket's %s=%s", body, cred.Attributes, k, v)
				}
			}
		}
		if !maps.Equal(cred.Attributes, reply.Attributes) {
			t.Fatalf("%q: credential attributes %v, reply says %v", body, cred.Attributes, reply.Attributes)
		}
	})
}
