package hub

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/relay"
	"github.com/sluicehq/sluice/agent/wire"
)

// session is one control connection: an agent's, or the authority's link.
// An agent's session is limited until it presents a credential for the key
// it authenticated with; then it is a member session.
type session struct {
	conn   *tls.Conn
	pub    ed25519.PublicKey
	nodeID string

	cred      atomic.Pointer[credential.Credential] // what it acts with; nil while limited
	active    atomic.Int64                          // data sessions announced to it and not ended (hub_replicas.go)
	gone      atomic.Bool                           // dropped: its connection ended (set under Hub.mu)
	exchanges int                                   // data sessions to the authority while limited
	public    netip.AddrPort                        // the control connection's remote address (hub_punch.go)
	direct    atomic.Bool                           // may be offered direct paths (hub_punch.go)

	wmu sync.Mutex // guards enc: one frame at a time
	enc *json.Encoder

	mu      sync.Mutex       // guards the following
	ready   bool             // admitted: pushes are written, not held
	outbox  []*relay.Message // pushes not yet written
	writing bool             // a writer goroutine is draining outbox
	closing bool             // close the connection once outbox is written
}

// maxOutbox bounds the pushes held for an agent that does not read them;
// past it the hub closes its connection rather than hold more.
const maxOutbox = 1024

// controlWriteTimeout bounds the write of one control frame.
const controlWriteTimeout = 10 * time.Second

// send writes m now (a reply).
func (s *session) send(m *relay.Message) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.conn.SetWriteDeadline(time.Now().Add(controlWriteTimeout))
	return s.enc.Encode(m)
}

// push queues m for the agent without waiting for it to be written, in
// order; before the session is admitted it is held until admitted.
func (s *session) push(m *relay.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.outbox) >= maxOutbox {
		s.conn.Close() // it stopped reading; its reader ends the session
		return
	}
	s.outbox = append(s.outbox, m)
	s.kickLocked()
}

// closeAfterPushes closes the connection once the pushes queued so far are
// written (or their write timed out), so that a revoked agent hears why.
func (s *session) closeAfterPushes() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	if !s.ready || (!s.writing && len(s.outbox) == 0) {
		s.conn.Close()
		return
	}
	s.kickLocked()
}

// isReady reports whether the session has been admitted.
func (s *session) isReady() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready
}

// admitted lets the pushes held since the session registered go out.
func (s *session) admitted() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ready = true
	s.kickLocked()
}

func (s *session) kickLocked() {
	if s.ready && !s.writing && len(s.outbox) > 0 {
		s.writing = true
		go s.drain()
	}
}

// drain writes the outbox until it is empty.
func (s *session) drain() {
	for {
		s.mu.Lock()
		if len(s.outbox) == 0 {
			s.writing = false
			if s.closing {
				s.conn.Close()
			}
			s.mu.Unlock()
			return
		}
		m := s.outbox[0]
		s.outbox[0] = nil
		s.outbox = s.outbox[1:]
		s.mu.Unlock()
		if err := s.send(m); err != nil {
			s.conn.Close()
			s.mu.Lock()
			s.outbox, s.writing = nil, false
			s.mu.Unlock()
			return
		}
	}
}

// maxLimitedExchanges bounds the data sessions to the authority a session
// may open before it presents a credential: enough to enroll and retry.
const maxLimitedExchanges = 4

// limitedFor is how long a session may stay limited: the time to reach the
// authority and come back with a credential, several times over.
const limitedFor = 30 * time.Second

func (h *Hub) handleControl(ctx context.Context, c *net.TCPConn, head []byte, ps *pass) {
	conn := tls.Server(&prefixConn{TCPConn: c, r: io.MultiReader(bytes.NewReader(head), c)}, h.tlsConf)
	defer conn.Close()
	hctx, cancel := context.WithTimeout(ctx, h.opts.HelloTimeout)
	err := conn.HandshakeContext(hctx)
	cancel()
	if err != nil {
		h.log.Debug("control handshake failed", zap.Stringer("remote", c.RemoteAddr()), zap.Error(err))
		return
	}
	pub := conn.ConnectionState().PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	s := &session{conn: conn, pub: pub, nodeID: identity.NodeID(pub), enc: json.NewEncoder(conn), public: remoteAddrPort(c)}
	dec := relay.NewFrameReader(conn, relay.MaxAgentMessage)
	log := h.log.With(zap.String("node", s.nodeID), zap.Stringer("remote", c.RemoteAddr()))
	defer h.drop(s)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	limitedUntil := time.Now().Add(limitedFor)
	for first := true; ; first = false {
		var m relay.Message
		if s.cred.Load() == nil {
			c.SetReadDeadline(limitedUntil)
		} else {
			// Agents ping every 15s; three missed pings and the link is dead.
			c.SetReadDeadline(time.Now().Add(time.Minute))
		}
		if err := dec.Decode(&m); err != nil {
			if h.badFrame(s, err, log) {
				return
			}
			if s.cred.Load() == nil {
				if ok, n := h.logs.noHello.Allow(time.Now()); ok {
					log.Debug("no credential presented", zap.Error(err), zap.Int64("more_not_logged", n))
				}
				return
			}
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				log.Debug("control connection ended", zap.Error(err))
			}
			log.Info("agent disconnected")
			return
		}
		if first && m.Op == relay.OpAuthority && h.isAuthority(pub) {
			h.serveAuthority(ctx, s, dec, ps, log.With(zap.String("role", "authority")))
			return
		}
		wasMember := s.cred.Load() != nil
		var r *relay.Message
		if wasMember {
			r = h.serve(s, &m)
		} else {
			r = h.serveLimited(s, &m)
		}
		r = h.scrub(r)
		r.ID, r.Op = m.ID, relay.OpReply
		if r.Error != "" {
			h.logRefusal(log, m.Op, m.Relay, r)
		}
		if err := s.send(r); err != nil {
			return
		}
		if !wasMember && s.cred.Load() != nil {
			// A member now: the words pushed since it registered go out,
			// and it counts as authenticated.
			ps.authenticated()
			s.admitted()
			h.dials.join(s)
			defer h.dials.leave(s)
			log.Info("agent connected")
		}
	}
}

// serveLimited answers a session that has not presented a credential: it
// may reach the authority, and present what it got.
func (h *Hub) serveLimited(s *session, m *relay.Message) *relay.Message {
	reply := &relay.Message{}
	switch {
	case m.Op == relay.OpPing:
		return reply
	case m.Op == relay.OpDial && m.Relay == relay.AuthorityRelay:
		if s.exchanges >= maxLimitedExchanges {
			h.refused.dialRate.Add(1)
			return refuse(reply, fmt.Errorf("dial the authority: %d data sessions already, present a credential first: %w",
				s.exchanges, wire.ErrRateLimited))
		}
		s.exchanges++
		return h.dialAuthority(s, reply)
	case m.Op == relay.OpPresent:
		return h.present(s, m, reply)
	}
	return refuse(reply, fmt.Errorf("%s: %w", m.Op, wire.ErrNoCredential))
}

// present takes the credential a session acts with from now on: the
// authority's, for the key the session authenticated with, valid and
// current. The first one makes the session a member session: registered
// before the words are read, so that none falls between the two (the words
// pushed meanwhile wait in its outbox until the reply is out).
func (h *Hub) present(s *session, m *relay.Message, reply *relay.Message) *relay.Message {
	cred, err := h.verifier().Verify([][]byte{m.Credential})
	if err == nil && !cred.Cert.PublicKey.(ed25519.PublicKey).Equal(s.pub) {
		err = errors.New("it is another node's")
	}
	if err != nil {
		if errors.Is(err, credential.ErrRevoked) {
			return refuse(reply, fmt.Errorf("present credential: %w", wire.ErrMemberRevoked))
		}
		return refuse(reply, fmt.Errorf("present credential: %w: %w", err, wire.ErrCredentialRefused))
	}
	if s.cred.Load() == nil {
		h.mu.Lock()
		h.sessions[s] = struct{}{}
		h.mu.Unlock()
	}
	s.cred.Store(cred)
	s.observe(m)
	reply.Generation, reply.Words, reply.Heartbeat = h.roster.since(m.Generation)
	return reply
}

// refuse makes m a refusal for err: its wire code and its text, or, for
// the hub's own failures, code "internal" and a text that reveals nothing
// (refusal.go).
func refuse(m *relay.Message, err error) *relay.Message {
	m.Error, m.Code = err.Error(), wire.CodeOf(err)
	if m.Code == codeInternal {
		m.Error, m.Cause = internalText, err
	}
	return m
}

// badFrame answers a message the hub could not read with a refusal when it
// was too large or malformed, and reports whether it did; the caller then
// closes the connection. Other read errors get no answer.
func (h *Hub) badFrame(s *session, err error, log *zap.Logger) bool {
	switch {
	case errors.Is(err, wire.ErrMessageTooLarge):
		h.refused.tooLarge.Add(1)
	case errors.Is(err, wire.ErrMalformed):
		h.refused.malformed.Add(1)
	default:
		return false
	}
	r := refuse(&relay.Message{Op: relay.OpReply}, err)
	h.logRefusal(log, "", "", r)
	s.send(r)
	return true
}

// serve answers one request of an admitted session.
func (h *Hub) serve(s *session, m *relay.Message) *relay.Message {
	reply := &relay.Message{}
	switch m.Op {
	case relay.OpPing:
		return reply
	case relay.OpPresent:
		return h.present(s, m, reply)
	case relay.OpMembers:
		reply.Generation, reply.Words, reply.Heartbeat = h.roster.since(m.Generation)
		return reply
	case relay.OpClaim:
		return h.claim(s, m.Relay, m.IfFree, reply)
	case relay.OpRelease:
		h.mu.Lock()
		h.unclaimLocked(m.Relay, s)
		h.mu.Unlock()
		return reply
	case relay.OpDial:
		if h.drain.isStarted() {
			// Its data connection would find the port closed: the
			// agent asks another hub (hub_drain.go).
			return refuse(reply, fmt.Errorf("dial relay %q: %w", m.Relay, wire.ErrGoingAway))
		}
		if m.Relay == relay.AuthorityRelay {
			if err := h.dials.rate(s.nodeID); err != nil {
				return refuse(reply, fmt.Errorf("dial the authority: %w", err))
			}
			return h.dialAuthority(s, reply)
		}
		return h.dial(s, m, reply)
	case relay.OpPunch:
		return h.punchFor(s, m, reply)
	case relay.OpDirect:
		return h.wentDirect(s, m, reply)
	case relay.OpPolicies:
		if err := h.dials.publish(s, m.Policies); err != nil {
			return refuse(reply, err)
		}
		return reply
	default:
		return refuse(reply, fmt.Errorf("unknown operation %q: %w", m.Op, wire.ErrUnsupported))
	}
}

func (h *Hub) claim(s *session, name string, ifFree bool, reply *relay.Message) *relay.Message {
	relays, err := h.mayClaim(s)
	if err != nil {
		return refuse(reply, fmt.Errorf("claim relay %q: %w", name, err))
	}
	if !slices.Contains(relays, name) {
		return refuse(reply, fmt.Errorf("claim relay %q: this node's tickets allow %v; create a ticket with --relay %s: %w",
			name, relays, name, wire.ErrRelayNotAllowed))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	holders := h.relays[name]
	cur, i := replicaOf(holders, s.nodeID)
	if err := takeOver(cur, s, name, ifFree); err != nil {
		return refuse(reply, err)
	}
	if i >= 0 {
		holders = slices.Clone(holders)
		holders[i] = s
	} else {
		holders = append(slices.Clip(holders), s) // another replica
	}
	h.relays[name] = holders
	return reply
}

func (h *Hub) dial(s *session, m *relay.Message, reply *relay.Message) *relay.Message {
	name := m.Relay
	if err := checkPort(m.Port); err != nil {
		return refuse(reply, fmt.Errorf("dial relay %q: %w", name, err))
	}
	// Cheapest first: the token bucket before the database, the policy
	// filter before a pending session is counted (dials.go).
	if err := h.dials.rate(s.nodeID); err != nil {
		return refuse(reply, fmt.Errorf("dial relay %q: %w", name, err))
	}
	h.mu.Lock()
	holders := h.relays[name]
	h.mu.Unlock()
	if len(holders) == 0 {
		return refuse(reply, fmt.Errorf("dial relay %q: %w", name, wire.ErrNoRelay))
	}
	owner, err := pickReplica(holders, func(o *session) error { return h.dialAllowed(s, o) })
	if owner == nil {
		return refuse(reply, fmt.Errorf("dial relay %q: %w", name, err))
	}
	release, err := h.dials.reserve(s.nodeID)
	if err != nil {
		return refuse(reply, fmt.Errorf("dial relay %q: %w", name, err))
	}
	p, err := h.newPairing(name, s.nodeID, release)
	if err != nil {
		release()
		return refuse(reply, fmt.Errorf("dial relay %q: %w", name, err))
	}
	// A replica whose connection fails now is passed over for the next.
	for {
		p.announceTo(owner)
		push := &relay.Message{Op: relay.OpIncoming, Relay: name, Token: p.outletTok[:], Node: s.nodeID}
		reply.Direct = offer(s, owner, m.Port)
		h.mu.Lock()
		p.punch = nil
		if reply.Direct {
			p.punch = &punch{inlet: s, port: uint16(m.Port)}
			push.Addr = netip.AddrPortFrom(s.public.Addr(), uint16(m.Port)).String()
		}
		h.mu.Unlock()
		// An owner dropped after it was picked fails the session itself
		// (drop), or is passed over here: never a dial left to time out.
		if err := owner.send(push); err == nil && !owner.gone.Load() {
			break
		}
		holders = withoutReplica(holders, owner)
		if owner, _ = pickReplica(holders, func(o *session) error { return h.dialAllowed(s, o) }); owner == nil {
			return refuse(reply, fmt.Errorf("dial relay %q: owner unreachable: %w", name, wire.ErrNoRelay))
		}
	}
	reply.Token = p.inletTok[:]
	reply.Node = owner.nodeID
	return reply
}

// mayClaim returns the relay names a member session may claim: its
// credential's, or the authority's newer word's.
func (h *Hub) mayClaim(s *session) ([]string, error) {
	cred := s.cred.Load()
	w, ok := h.roster.word(s.nodeID)
	switch {
	case ok && w.Revoked:
		return nil, wire.ErrMemberRevoked
	case ok && w.Generation >= cred.Generation:
		return w.Relays, nil
	}
	return cred.Relays, nil
}

// dialAllowed checks the caller's current attributes (its credential's, or
// the authority's newer word's) against the outlet policies the owner
// published, if it did.
func (h *Hub) dialAllowed(s, owner *session) error {
	if _, ok := h.dials.published(owner); !ok {
		return nil
	}
	attrs, err := h.verifier().Attributes(s.cred.Load())
	if err != nil {
		if errors.Is(err, credential.ErrRevoked) {
			return wire.ErrMemberRevoked
		}
		return fmt.Errorf("%w: %w", err, wire.ErrCredentialRefused)
	}
	return h.dials.allows(owner, attrs)
}

// unclaimLocked takes s off the holders of name; h.mu is held.
func (h *Hub) unclaimLocked(name string, s *session) {
	holders := withoutReplica(h.relays[name], s)
	if len(holders) == 0 {
		delete(h.relays, name)
		return
	}
	h.relays[name] = holders
}

// drop forgets a session whose connection ended: its claims, and the data
// sessions announced to it that it will never open, which fail at once
// rather than leave their inlets waiting for SessionTimeout.
func (h *Hub) drop(s *session) {
	h.mu.Lock()
	s.gone.Store(true)
	delete(h.sessions, s)
	for name := range h.relays {
		h.unclaimLocked(name, s)
	}
	var orphans []*pairing
	for _, p := range h.pending {
		if p.owner.Load() == s && h.forgetLocked(p) {
			orphans = append(orphans, p)
		}
	}
	h.mu.Unlock()
	for _, p := range orphans {
		p.fail()
	}
}
