package daemon

import (
	"context"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/credential"
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

// onMember records a word on a member, unless a newer one is known, and
// wakes the review. A revocation is for good, whatever comes after it.
func (a *Agent) onMember(u relay.MemberUpdate) {
	if !a.members.Update(u.Node, credential.State{Generation: u.Generation, Attributes: u.Attributes, Revoked: u.Revoked}) {
		return
	}
	a.dirtyMu.Lock()
	a.dirty = append(a.dirty, u.Node)
	a.dirtyMu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// peerDenied reports whether the authority's word on node rules out a
// channel that allow must admit: node revoked, or its attributes pushed
// since fail allow. It is true for every node if this agent was revoked.
func (a *Agent) peerDenied(node string, allow *policy.Policy) bool {
	if self, _ := a.members.Current(a.id.ID()); self.Revoked {
		return true
	}
	u, ok := a.members.Current(node)
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
		a.reviewPending()
	}
}

// reviewPending applies the member updates recorded since the last review.
func (a *Agent) reviewPending() {
	a.dirtyMu.Lock()
	nodes := a.dirty
	a.dirty = nil
	a.dirtyMu.Unlock()
	for _, n := range nodes {
		st, _ := a.members.Current(n)
		a.review(n, st)
	}
	a.mu.Lock()
	err := a.syncLocked()
	a.mu.Unlock()
	if err != nil {
		a.log.Error("updating the data path after a member update failed", zap.Error(err))
	}
}

func (a *Agent) review(node string, st credential.State) {
	if node == a.id.ID() {
		if st.Revoked {
			a.log.Error("the authority revoked this agent: it gets no new credential, peers refuse it, and its transparent inlets refuse every connection")
		}
		return
	}
	n := a.ports.ReviewPeer(node, orEmpty(st.Attributes), st.Revoked)
	a.log.Info("member update from the hub", zap.String("node", node), zap.Uint64("generation", st.Generation),
		zap.Bool("revoked", st.Revoked), zap.Any("attributes", st.Attributes), zap.Int("channels_reset", n))
}
