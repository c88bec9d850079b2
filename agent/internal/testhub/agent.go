package testhub

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/channel"
	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/relay"
)

// AgentOptions describe an agent's relay client. Zero values mean: a new
// identity, a hello without ticket, the hub's authority key, the default ping
// interval.
type AgentOptions struct {
	Identity *identity.Identity
	// Hubs, if set, are the hubs the client knows (relay.ClientOptions.Hubs);
	// it connects to the first.
	Hubs         []string
	Ticket       string
	AuthorityKey ed25519.PublicKey
	PingInterval time.Duration
	Logger       *zap.Logger // the client's; zap.NewNop()
	MaxStale     time.Duration
	Direct       bool // the client asks for direct paths (relay.ClientOptions.Direct)
}

// Agent is a node with a started relay.Client, and the channel keys and
// verifier built from its grant as the agent daemon builds them.
type Agent struct {
	Identity *identity.Identity
	Client   *relay.Client
	Grant    relay.Grant // the first one
	Keys     *channel.Keys
	Verifier *credential.Verifier
	// Members is the agent's view of the member state, fed by OnMember as
	// the daemon feeds its own; Verifier.Current reads it.
	Members *credential.Members

	stop     context.CancelFunc
	incoming atomic.Pointer[func(relay.Incoming)]
	away     atomic.Pointer[func(string)]
	grants   chan relay.Grant
	members  chan relay.MemberUpdate
}

// Connect starts a relay client for the hub; it stops when the test ends.
// The error is the one Start returned.
func (h *Hub) Connect(t testing.TB, opts AgentOptions) (*Agent, error) {
	t.Helper()
	if opts.Identity == nil {
		id, err := identity.New()
		if err != nil {
			t.Fatal(err)
		}
		opts.Identity = id
	}
	if opts.AuthorityKey == nil {
		opts.AuthorityKey = h.AuthorityKey()
	}
	a := &Agent{Identity: opts.Identity, Keys: new(channel.Keys), Members: new(credential.Members),
		grants: make(chan relay.Grant, 16), members: make(chan relay.MemberUpdate, 256)}
	c, err := relay.NewClient(relay.ClientOptions{
		Hub:          h.Addr,
		Hubs:         opts.Hubs,
		Identity:     opts.Identity,
		AuthorityKey: opts.AuthorityKey,
		Ticket:       opts.Ticket,
		PingInterval: opts.PingInterval,
		Logger:       opts.Logger,
		MaxStale:     opts.MaxStale,
		Direct:       opts.Direct,
		OnIncoming: func(in relay.Incoming) {
			if f := a.incoming.Load(); f != nil {
				(*f)(in)
			}
		},
		OnGoingAway: func(hub string) {
			if f := a.away.Load(); f != nil {
				(*f)(hub)
			}
		},
		OnMember: func(u relay.MemberUpdate) {
			a.Members.Update(u.Node, credential.State{Generation: u.Generation, Attributes: u.Attributes, Revoked: u.Revoked})
			select {
			case a.members <- u:
			default:
			}
		},
		OnGrant: func(g relay.Grant) {
			if err := a.install(g); err == nil {
				select {
				case a.grants <- g:
				default:
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	a.Client = c
	ctx, cancel := context.WithCancel(context.Background())
	a.stop = cancel
	t.Cleanup(cancel)
	g, err := c.Start(ctx)
	if err != nil {
		return nil, err
	}
	a.Grant = g
	if err := a.install(g); err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(g.Authority)
	if err != nil {
		t.Fatalf("hub sent an unreadable authority certificate: %v", err)
	}
	a.Verifier = &credential.Verifier{Root: root, ProjectID: g.Project, Current: a.Members.Current}
	return a, nil
}

// Enroll creates a ticket with attrs and relays, and connects a new agent
// with it; it fails the test if the hub refuses.
func (h *Hub) Enroll(t testing.TB, attrs map[string]string, relays ...string) *Agent {
	t.Helper()
	return h.EnrollWith(t, AgentOptions{}, attrs, relays...)
}

// EnrollWith is Enroll with the client options opts (its Ticket is made
// here).
func (h *Hub) EnrollWith(t testing.TB, opts AgentOptions, attrs map[string]string, relays ...string) *Agent {
	t.Helper()
	opts.Ticket = h.Ticket(t, authority.TicketOptions{Attributes: attrs, Relays: relays})
	a, err := h.Connect(t, opts)
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	return a
}

// install makes g's credential the one the agent presents on channels.
func (a *Agent) install(g relay.Grant) error {
	cred, err := credential.ParseDER(g.Credential)
	if err != nil {
		return err
	}
	if cred.NodeID != a.Identity.ID() {
		return fmt.Errorf("credential names node %s, this is %s", cred.NodeID, a.Identity.ID())
	}
	a.Keys.Set(&tls.Certificate{Certificate: [][]byte{g.Credential}, PrivateKey: a.Identity.PrivateKey(), Leaf: cred.Cert})
	return nil
}

// Stop stops the client: it closes its control connection and stops
// reconnecting.
func (a *Agent) Stop() { a.stop() }

// OnIncoming sets what the agent does with incoming data sessions.
func (a *Agent) OnIncoming(f func(relay.Incoming)) { a.incoming.Store(&f) }

// OnGoingAway sets what the agent does when a hub says it is going away.
func (a *Agent) OnGoingAway(f func(hub string)) { a.away.Store(&f) }

// ErrNoGrant is returned by NextGrant when no grant arrives in time.
var ErrNoGrant = errors.New("no grant arrived")

// NextGrant waits for the client's next OnGrant.
func (a *Agent) NextGrant(timeout time.Duration) (relay.Grant, error) {
	select {
	case g := <-a.grants:
		return g, nil
	case <-time.After(timeout):
		return relay.Grant{}, fmt.Errorf("%w within %v", ErrNoGrant, timeout)
	}
}

// ErrNoMemberUpdate is returned by NextMember when no update arrives in time.
var ErrNoMemberUpdate = errors.New("no member update arrived")

// NextMemberOf waits for the client's next OnMember about node, skipping
// words on other nodes.
func (a *Agent) NextMemberOf(node string, timeout time.Duration) (relay.MemberUpdate, error) {
	deadline := time.After(timeout)
	for {
		select {
		case u := <-a.members:
			if u.Node == node {
				return u, nil
			}
		case <-deadline:
			return relay.MemberUpdate{}, fmt.Errorf("%w on %s within %v", ErrNoMemberUpdate, node, timeout)
		}
	}
}
