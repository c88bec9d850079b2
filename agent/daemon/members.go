package daemon

import (
	"context"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/policy"
	"github.com/sluicehq/sluice/agent/relay"
)

// Member updates from the hub (a node revoked, or its attributes changed)
// take effect in two steps:
//
//	relay client's reader ──onMember──> peers (the verifier sees it at once)
//	    ──kick──> reviewLoop: reset the channels the policies no longer
//	              allow, rewrite the maps (transparent inlets whose peer is
//	              out are denied in the kernel)
//
// onMember never blocks the reader: it only records and kicks.

// members is the authority's latest word on other nodes, as the hub pushed it.
type members struct {
	peers map[string]relay.MemberUpdate
	dirty []string // nodes to review
}

// onMember records an update and wakes the review.
func (a *Agent) onMember(u relay.MemberUpdate) {
	a.peersMu.Lock()
	if a.members.peers == nil {
		a.members.peers = map[string]relay.MemberUpdate{}
	}
	if old, ok := a.members.peers[u.Node]; ok && old.Revoked {
		u.Revoked = true // revocation is for good
	}
	a.members.peers[u.Node] = u
	a.members.dirty = append(a.members.dirty, u.Node)
	a.peersMu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// isRevoked is the verifier's revocation check.
func (a *Agent) isRevoked(node string) bool {
	a.peersMu.Lock()
	defer a.peersMu.Unlock()
	return a.members.peers[node].Revoked
}

// peerDenied reports whether the authority's word on node rules out a
// channel that allow must admit: node revoked, or its attributes pushed
// since fail allow. It is true for every node if this agent was revoked.
func (a *Agent) peerDenied(node string, allow *policy.Policy) bool {
	a.peersMu.Lock()
	defer a.peersMu.Unlock()
	if a.members.peers[a.id.ID()].Revoked {
		return true
	}
	u, ok := a.members.peers[node]
	if node == "" || !ok {
		return false
	}
	return u.Revoked || !allow.Allows(orEmpty(u.Attributes))
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// reviewLoop applies member updates until ctx ends.
func (a *Agent) reviewLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		}
		a.peersMu.Lock()
		var updates []relay.MemberUpdate
		for _, n := range a.members.dirty {
			updates = append(updates, a.members.peers[n])
		}
		a.members.dirty = nil
		a.peersMu.Unlock()
		for _, u := range updates {
			a.review(u)
		}
		a.mu.Lock()
		err := a.syncLocked()
		a.mu.Unlock()
		if err != nil {
			a.log.Error("updating the data path after a member update failed", zap.Error(err))
		}
	}
}

func (a *Agent) review(u relay.MemberUpdate) {
	if u.Node == a.id.ID() {
		if u.Revoked {
			a.log.Error("the authority revoked this agent: it gets no new credential, peers refuse it, and its transparent inlets refuse every connection")
		}
		return
	}
	n := a.ports.ReviewPeer(u.Node, orEmpty(u.Attributes), u.Revoked)
	a.log.Info("member update from the hub", zap.String("node", u.Node), zap.Bool("revoked", u.Revoked),
		zap.Any("attributes", u.Attributes), zap.Int("channels_reset", n))
}
