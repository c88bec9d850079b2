package authority

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/sluicehq/sluice/agent/hub/authority/store"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/internal/alpn"
	"github.com/sluicehq/sluice/agent/wire"
)

// The authority at work. It never needs the relay's trust:
//
//	agent ──TLS (the authority's own key, pinned by every ticket)──> Service.Exchange
//	      enroll / hello / renew, end to end through a relay data session:
//	      the relay sees ciphertext, and the ticket never in clear
//
//	Service ──Change (signed word, fresh credential)──> relays ──> agents
//	      every statement signed, so a relay passes them on and can forge none
//
// A relay reaches the service in-process (agent hub, both roles) or through
// the authority's own link to it (agent authority, the relay elsewhere).

// ErrUnsupported means an exchange request names no operation the
// authority knows: the agent's mistake, not the authority's failure.
var ErrUnsupported = errors.New("unsupported exchange request")

// maxExchangeRequest bounds what the service reads of a request.
const maxExchangeRequest = 64 << 10

// exchangeTimeout bounds one exchange, handshake included.
const exchangeTimeout = 10 * time.Second

// Change is what relays pass on after a member change, in the order the
// service made them: the signed word for everyone, and for the node's own
// agents a fresh credential (nil when it gets none: revoked).
type Change struct {
	Node  string
	Word  wire.Statement
	Grant []byte
}

// Service answers agents for an Authority and tells relays of changes.
type Service struct {
	auth *Authority
	tls  *tls.Config

	mu   sync.Mutex // serializes changes with their notification; guards the following
	subs map[*func(Change)]struct{}

	// With a store other hubs share, changes are notified from its watch
	// (Follow), in generation order, whichever hub made them.
	shared        store.Shared
	onFollowError func(node string, err error)
	// followFrom is the generation when the service was made: Follow
	// notifies the changes after it (if known; else after the one it
	// reads when it starts).
	followFrom      uint64
	followFromKnown bool
	fmu             sync.Mutex    // guards the following
	followed        uint64        // the newest generation Follow notified
	advanced        chan struct{} // closed when followed grows
}

// NewService puts an authority to work.
func NewService(a *Authority) *Service {
	p := a.project
	shared, _ := a.store.(store.Shared)
	from, err := uint64(0), error(nil)
	if shared != nil {
		from, err = a.Generation()
	}
	return &Service{auth: a, subs: map[*func(Change)]struct{}{}, shared: shared, advanced: make(chan struct{}),
		followFrom: from, followFromKnown: err == nil, tls: &tls.Config{
			MinVersion: tls.VersionTLS13,
			// The authority presents its own certificate: agents pin its key.
			Certificates: []tls.Certificate{{Certificate: [][]byte{p.Cert.Raw}, PrivateKey: p.Key, Leaf: p.Cert}},
			NextProtos:   []string{wire.ExchangeALPN},
			// Any Ed25519 certificate: the handshake proves the agent holds
			// the node key; the request says what it wants of it.
			ClientAuth:            tls.RequireAnyClientCert,
			VerifyPeerCertificate: identity.RequireNodeKey,
			VerifyConnection: func(cs tls.ConnectionState) error {
				return alpn.Require(cs, wire.ExchangeALPN)
			},
		}}
}

// Authority is the authority the service runs.
func (s *Service) Authority() *Authority { return s.auth }

// Project is the project the service's authority serves.
func (s *Service) Project() *Project { return s.auth.project }

// Subscribe calls f with every change from now on, in order, until the
// returned func is called. f must not block for long: changes wait for it.
func (s *Service) Subscribe(f func(Change)) (cancel func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs[&f] = struct{}{}
	return func() {
		s.mu.Lock()
		delete(s.subs, &f)
		s.mu.Unlock()
	}
}

// notifyLocked tells the subscribers of a change to m.
func (s *Service) notifyLocked(m *Member) error {
	st, err := wire.Sign(s.auth.project.Key, WordOf(s.auth.project.ID, m))
	if err != nil {
		return err
	}
	c := Change{Node: m.NodeID, Word: st}
	var grantErr error
	if !m.Revoked {
		if c.Grant, _, err = s.auth.Issue(m.NodeID); err != nil {
			if s.shared == nil {
				return err
			}
			// From the shared store's watch: the word goes out all the
			// same (the node learns of its generation and renews).
			grantErr, c.Grant = err, nil
		}
	}
	for f := range s.subs {
		(*f)(c)
	}
	return grantErr
}

// change applies one change to the database and notifies it (with a shared
// store, waits until Follow did).
func (s *Service) change(apply func() (*Member, error)) (*Member, error) {
	if s.shared != nil {
		m, err := apply()
		if err != nil {
			return nil, err
		}
		s.awaitFollowed(m.Generation)
		return m, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := apply()
	if err != nil {
		return nil, err
	}
	if err := s.notifyLocked(m); err != nil {
		return m, fmt.Errorf("tell relays of the change to %s: %w", m.NodeID, err)
	}
	return m, nil
}

// followWait bounds how long a change waits for its notification through
// the shared store's watch: the change is committed either way, and the
// watch passes it on once it catches up.
const followWait = 2 * time.Second

// awaitFollowed waits until Follow notified generation gen.
func (s *Service) awaitFollowed(gen uint64) {
	timeout := time.NewTimer(followWait)
	defer timeout.Stop()
	for {
		s.fmu.Lock()
		done, ch := s.followed >= gen, s.advanced
		s.fmu.Unlock()
		if done {
			return
		}
		select {
		case <-ch:
		case <-timeout.C:
			return
		}
	}
}

// Follow notifies the changes to a shared store (store.Shared) made since
// NewService, whichever hub made them, in generation order and once each,
// until ctx ends: with
// such a store, the one place changes are notified from. Without one it
// returns at once.
func (s *Service) Follow(ctx context.Context) error {
	if s.shared == nil {
		return nil
	}
	gen, err := s.followFrom, error(nil)
	if !s.followFromKnown {
		gen, err = s.auth.Generation()
	}
	for err != nil { // no quorum yet
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
		gen, err = s.auth.Generation()
	}
	return s.shared.WatchMembers(ctx, gen, func(m Member) {
		s.mu.Lock()
		err := s.notifyLocked(&m)
		s.mu.Unlock()
		if err != nil && s.onFollowError != nil {
			s.onFollowError(m.NodeID, err)
		}
		s.fmu.Lock()
		s.followed = max(s.followed, m.Generation)
		close(s.advanced)
		s.advanced = make(chan struct{})
		s.fmu.Unlock()
	})
}

// OnFollowError sets what hears of a change Follow could not pass on (a
// credential it could not issue without quorum: the word went out, the
// node renews). Set it before Follow runs.
func (s *Service) OnFollowError(f func(node string, err error)) { s.onFollowError = f }

// Revoke revokes a member for good and tells the relays.
func (s *Service) Revoke(nodeID string) (*Member, error) {
	return s.change(func() (*Member, error) { return s.auth.Revoke(nodeID) })
}

// SetAttributes replaces a member's attributes and tells the relays, with a
// credential that carries them for the member.
func (s *Service) SetAttributes(nodeID string, attrs map[string]string) (*Member, error) {
	return s.change(func() (*Member, error) { return s.auth.SetAttributes(nodeID, attrs) })
}

// Members lists the members.
func (s *Service) Members() ([]Member, error) { return s.auth.Members() }

// Words returns the project's generation and the signed words on every
// member changed after since (all of them if since is ahead of the
// authority, as after a database restored from a backup).
func (s *Service) Words(since uint64) (uint64, []wire.Statement, error) {
	gen, ms, err := s.auth.Snapshot()
	if err != nil {
		return 0, nil, err
	}
	if since > gen {
		since = 0
	}
	var out []wire.Statement
	for i := range ms {
		if ms[i].Generation <= since {
			continue
		}
		st, err := wire.Sign(s.auth.project.Key, WordOf(s.auth.project.ID, &ms[i]))
		if err != nil {
			return 0, nil, err
		}
		out = append(out, st)
	}
	return gen, out, nil
}

// Heartbeat signs the authority's generation at the time now.
func (s *Service) Heartbeat() (wire.Statement, error) {
	gen, err := s.auth.Generation()
	if err != nil {
		return wire.Statement{}, err
	}
	return wire.Sign(s.auth.project.Key, wire.Heartbeat{Kind: wire.KindHeartbeat, Project: s.auth.project.ID, Generation: gen, Time: s.auth.now().UTC()})
}

// Exchange serves one agent's request end to end on conn (a relay's data
// connection, or a direct one) and closes it.
func (s *Service) Exchange(ctx context.Context, conn net.Conn) error {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(exchangeTimeout))
	tc := tls.Server(conn, s.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("exchange: handshake: %w", err)
	}
	pub := tc.ConnectionState().PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	var req wire.ExchangeRequest
	if err := json.NewDecoder(io.LimitReader(tc, maxExchangeRequest)).Decode(&req); err != nil {
		return fmt.Errorf("exchange: read request: %w", err)
	}
	reply, cause := s.answer(pub, &req)
	if err := json.NewEncoder(tc).Encode(reply); err != nil {
		return fmt.Errorf("exchange: write reply: %w", err)
	}
	tc.Close()
	return cause
}

// answer answers a request of the node holding pub; the error is the cause
// of a refusal, for the caller's log.
func (s *Service) answer(pub ed25519.PublicKey, req *wire.ExchangeRequest) (*wire.ExchangeReply, error) {
	node := identity.NodeID(pub)
	switch req.Op {
	case wire.OpEnroll:
		if _, err := s.change(func() (*Member, error) { return s.auth.Redeem(req.Ticket, pub) }); err != nil {
			return refusal(err), err
		}
	case wire.OpHello, wire.OpRenew:
	default:
		err := fmt.Errorf("exchange: operation %q (want %s, %s or %s): %w", req.Op, wire.OpEnroll, wire.OpHello, wire.OpRenew, ErrUnsupported)
		return refusal(err), err
	}
	der, m, err := s.auth.Issue(node)
	if err != nil {
		return refusal(err), err
	}
	reply := &wire.ExchangeReply{Credential: der, Authority: s.auth.project.Cert.Raw, Project: s.auth.project.ID,
		Node: node, Attributes: m.Attributes}
	if reply.Generation, reply.Words, err = s.Words(req.Generation); err != nil {
		return refusal(err), err
	}
	if reply.Heartbeat, err = s.Heartbeat(); err != nil {
		return refusal(err), err
	}
	return reply, nil
}

// codes are the wire codes of the authority's refusals.
var codes = []struct {
	code string
	err  error
}{
	{"ticket_malformed", wire.ErrTicketMalformed},
	{"ticket_foreign", wire.ErrTicketForeign},
	{"ticket_expired", wire.ErrTicketExpired},
	{"ticket_used", wire.ErrTicketUsed},
	{"relay_not_allowed", wire.ErrRelayNotAllowed},
	{"not_member", wire.ErrNotMember},
	{"revoked", wire.ErrMemberRevoked},
	{"unsupported", ErrUnsupported},
	{"no_quorum", wire.ErrNoQuorum},
}

// Code is the wire code of one of the authority's refusals, or "internal"
// for its own failures (a database error), whose text stays in its log.
func Code(err error) string {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "internal"
}

// refusal is the reply to a refused request: the text of a refusal the
// agent caused, a fixed one for the authority's own failures.
func refusal(err error) *wire.ExchangeReply {
	code := Code(err)
	switch code {
	case "no_quorum": // the agent may try another hub; the text says no secret
		return &wire.ExchangeReply{Error: wire.ErrNoQuorum.Error(), Code: code}
	case "internal":
		return &wire.ExchangeReply{Error: "the authority failed to answer; its operator has the cause in its log", Code: code}
	}
	return &wire.ExchangeReply{Error: err.Error(), Code: code}
}
