package authority

import (
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/wire"
)

// ErrBadAttribute means an attribute's name or value is not valid.
var ErrBadAttribute = errors.New("invalid attribute")

// update changes a member's record in one transaction.
func (a *Authority) update(nodeID string, change func(m *Member) error) (*Member, error) {
	return a.store.Update(nodeID, change)
}

// Revoke ends a node's membership: it is issued no credential again and may
// not enroll again. Revoking twice is not an error.
func (a *Authority) Revoke(nodeID string) (*Member, error) {
	m, err := a.update(nodeID, func(m *Member) error {
		m.Revoked = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("revoke %s: %w", nodeID, err)
	}
	a.audit.Info("member revoked", zap.String("node", m.NodeID), zap.Uint64("generation", m.Generation))
	return m, nil
}

// SetAttributes replaces a member's attributes. Its next credential carries
// them; the hub tells connected agents at once.
func (a *Authority) SetAttributes(nodeID string, attrs map[string]string) (*Member, error) {
	for k, v := range attrs {
		if err := wire.CheckAttribute(k, v); err != nil {
			return nil, fmt.Errorf("set attributes of %s: %w: %w", nodeID, err, ErrBadAttribute)
		}
	}
	m, err := a.update(nodeID, func(m *Member) error {
		if m.Revoked {
			return fmt.Errorf("set attributes of %s: %w", nodeID, wire.ErrMemberRevoked)
		}
		m.Attributes = map[string]string{}
		for k, v := range attrs {
			m.Attributes[k] = v
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	a.audit.Info("member attributes set", zap.String("node", m.NodeID), zap.Any("attributes", m.Attributes), zap.Uint64("generation", m.Generation))
	return m, nil
}
