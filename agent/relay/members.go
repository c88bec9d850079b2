package relay

import (
	"crypto/ed25519"
	"fmt"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/authority"
)

// MemberUpdate is the authority's word on a node, as the hub tells agents:
// pushed to every connected agent when a member is revoked, enrolls or its
// attributes change, and listed with every credential for the words an
// agent has not heard yet. Generation orders words: a newer one replaces an
// older one, and a credential issued before a node's newest word is stale.
type MemberUpdate struct {
	Node       string            `json:"node"`
	Generation uint64            `json:"generation"`
	Attributes map[string]string `json:"attributes,omitempty"`
	Revoked    bool              `json:"revoked,omitempty"`
}

// updateOf is the word on a member record.
func updateOf(m *authority.Member) MemberUpdate {
	return MemberUpdate{Node: m.NodeID, Generation: m.Generation, Attributes: m.Attributes, Revoked: m.Revoked}
}

// Member changes take effect as follows, under memberMu so that every
// session receives the words in generation order:
//
//	authority (one transaction: record + generation)
//	    ──> the node's own sessions: a fresh credential (opGrant), or a
//	        closed connection if it was revoked
//	    ──> every session's outbox: the word (opMember); each session's
//	        writer sends it, so an agent that stops reading delays no one

// Revoke revokes a member, closes its control connection (its relay names
// go with it) and tells every connected agent, which stop trusting it and
// close their channels with it.
func (h *Hub) Revoke(nodeID string) (*authority.Member, error) {
	h.memberMu.Lock()
	defer h.memberMu.Unlock()
	m, err := h.auth.Revoke(nodeID)
	if err != nil {
		return nil, err
	}
	h.log.Info("member revoked", zap.String("node", nodeID), zap.Uint64("generation", m.Generation))
	h.broadcast(m)
	for _, s := range h.sessionsOf(nodeID) {
		s.closeAfterPushes() // it hears of its revocation first
	}
	return m, nil
}

// SetAttributes replaces a member's attributes, hands the member a
// credential that carries them at once, and tells every connected agent,
// which re-check their policies against them.
func (h *Hub) SetAttributes(nodeID string, attrs map[string]string) (*authority.Member, error) {
	h.memberMu.Lock()
	defer h.memberMu.Unlock()
	m, err := h.auth.SetAttributes(nodeID, attrs)
	if err != nil {
		return nil, err
	}
	h.log.Info("member attributes changed", zap.String("node", nodeID), zap.Any("attributes", m.Attributes),
		zap.Uint64("generation", m.Generation))
	h.regrant(nodeID)
	h.broadcast(m)
	return m, nil
}

// redeem redeems a ticket for the node holding pub and tells every agent
// about the member record it created or extended.
func (h *Hub) redeem(ticket string, pub ed25519.PublicKey) (*authority.Member, error) {
	h.memberMu.Lock()
	defer h.memberMu.Unlock()
	m, err := h.auth.Redeem(ticket, pub)
	if err != nil {
		return nil, err
	}
	h.regrant(m.NodeID)
	h.broadcast(m)
	return m, nil
}

// regrant pushes a fresh credential to the node's admitted sessions (one
// being admitted gets one in its reply). A session that misses it learns
// of its new generation from the broadcast and renews.
func (h *Hub) regrant(nodeID string) {
	for _, s := range h.sessionsOf(nodeID) {
		if !s.isReady() {
			continue
		}
		push := h.issue(s, &message{Op: opGrant})
		if push.Error != "" {
			h.log.Warn("fresh credential not issued", zap.String("node", nodeID), zap.String("reason", push.Error))
			continue
		}
		s.push(push)
	}
}

// Members lists the authority's members.
func (h *Hub) Members() ([]authority.Member, error) {
	ms, err := h.auth.Members()
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	return ms, nil
}

// sessionsOf returns the sessions of a node.
func (h *Hub) sessionsOf(nodeID string) []*session {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*session
	for s := range h.sessions {
		if s.nodeID == nodeID {
			out = append(out, s)
		}
	}
	return out
}

// broadcast queues the word on m for every session, admitted or being
// admitted (which send it once their credential reply is out).
func (h *Hub) broadcast(m *authority.Member) {
	u := updateOf(m)
	msg := &message{Op: opMember, Node: u.Node, Generation: u.Generation, Attributes: u.Attributes, Revoked: u.Revoked}
	h.mu.Lock()
	all := make([]*session, 0, len(h.sessions))
	for s := range h.sessions {
		all = append(all, s)
	}
	h.mu.Unlock()
	for _, s := range all {
		s.push(msg)
	}
}

// memberState fills a credential reply with the words newer than since (all
// of them if since is ahead of the authority, as after a restored database).
func (h *Hub) memberState(reply *message, since uint64) error {
	gen, ms, err := h.auth.Snapshot()
	if err != nil {
		return err
	}
	if since > gen {
		since = 0
	}
	reply.Generation = gen
	reply.Members = reply.Members[:0]
	for i := range ms {
		if ms[i].Generation > since {
			reply.Members = append(reply.Members, updateOf(&ms[i]))
		}
	}
	return nil
}
