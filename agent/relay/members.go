package relay

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/authority"
)

// MemberUpdate is what the hub tells every connected agent when a member is
// revoked or its attributes change: the authority's current word on Node.
type MemberUpdate struct {
	Node       string            `json:"node"`
	Attributes map[string]string `json:"attributes,omitempty"`
	Revoked    bool              `json:"revoked,omitempty"`
}

// Revoke revokes a member, closes its control connection (its relay names
// go with it) and tells every connected agent, which stop trusting it and
// close their channels with it.
func (h *Hub) Revoke(nodeID string) (*authority.Member, error) {
	m, err := h.auth.Revoke(nodeID)
	if err != nil {
		return nil, err
	}
	h.log.Info("member revoked", zap.String("node", nodeID))
	h.broadcast(&message{Op: opMember, Node: nodeID, Revoked: true})
	h.mu.Lock()
	var gone []*session
	for s := range h.sessions {
		if s.nodeID == nodeID {
			gone = append(gone, s)
		}
	}
	h.mu.Unlock()
	for _, s := range gone {
		s.conn.Close()
	}
	return m, nil
}

// SetAttributes replaces a member's attributes and tells every connected
// agent, which re-check their policies against them at once; the member's
// next credential carries them.
func (h *Hub) SetAttributes(nodeID string, attrs map[string]string) (*authority.Member, error) {
	m, err := h.auth.SetAttributes(nodeID, attrs)
	if err != nil {
		return nil, err
	}
	h.log.Info("member attributes changed", zap.String("node", nodeID), zap.Any("attributes", m.Attributes))
	h.broadcast(&message{Op: opMember, Node: nodeID, Attributes: m.Attributes})
	return m, nil
}

// Members lists the authority's members.
func (h *Hub) Members() ([]authority.Member, error) {
	ms, err := h.auth.Members()
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	return ms, nil
}

// broadcast sends m to every admitted agent; a failed send drops nothing
// here (the session's own loop notices the dead connection).
func (h *Hub) broadcast(m *message) {
	h.mu.Lock()
	all := make([]*session, 0, len(h.sessions))
	for s := range h.sessions {
		all = append(all, s)
	}
	h.mu.Unlock()
	for _, s := range all {
		if err := s.send(m); err != nil {
			h.log.Debug("member update not delivered", zap.String("to", s.nodeID), zap.Error(err))
		}
	}
}
