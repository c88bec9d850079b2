package portal

import (
	"sync"

	"github.com/sluicehq/sluice/agent/policy"
)

// peerChannel is an open secure channel with another agent, and the policy
// that admitted that agent.
type peerChannel struct {
	node  string
	allow *policy.Policy
	abort func() // resets the channel and the local connection
}

// channels are the open channels by peer, so that a revocation or an
// attribute change can close those the policy no longer allows.
type channels struct {
	mu  sync.Mutex // guards set
	set map[*peerChannel]struct{}
}

// track records a channel; the caller calls the returned func when it ends.
func (cs *channels) track(node string, allow *policy.Policy, abort func()) (untrack func()) {
	pc := &peerChannel{node: node, allow: allow, abort: abort}
	cs.mu.Lock()
	if cs.set == nil {
		cs.set = map[*peerChannel]struct{}{}
	}
	cs.set[pc] = struct{}{}
	cs.mu.Unlock()
	return func() {
		cs.mu.Lock()
		delete(cs.set, pc)
		cs.mu.Unlock()
	}
}

// ReviewPeer applies the authority's word on node to the open channels:
// all of them are reset if node was revoked; otherwise those whose
// portal's policy does not allow node's new attributes. It returns how many
// it reset. New channels are checked by the verifier and the policies at
// their handshake.
func (m *Manager) ReviewPeer(node string, attrs map[string]string, revoked bool) int {
	m.chans.mu.Lock()
	var doomed []*peerChannel
	for pc := range m.chans.set {
		if pc.node == node && (revoked || !pc.allow.Allows(attrs)) {
			doomed = append(doomed, pc)
			delete(m.chans.set, pc)
		}
	}
	m.chans.mu.Unlock()
	for _, pc := range doomed {
		pc.abort()
	}
	return len(doomed)
}

// InletPeer is the node that owned the inlet's relay when the inlet last
// opened a channel through it; "" if it never did.
func (m *Manager) InletPeer(name string) string {
	m.mu.Lock()
	in := m.inlets[name]
	m.mu.Unlock()
	if in == nil {
		return ""
	}
	if p := in.peer.Load(); p != nil {
		return *p
	}
	return ""
}
