package daemon

import (
	"context"
	"sync"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/policy"
	"github.com/sluicehq/sluice/agent/portal"
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

// reviewer is the member reviewer. It owns the authority's word on each
// node as the hub sent it (members: the portals' verifier reads it too),
// the nodes whose word changed since the last review (dirty), and the
// review loop that applies them to the portals and the data path.
//
// Lock order: dirtyMu is taken alone. A review calls the data path
// controller's sync (its own locks) and the portal Manager with no lock
// of its own held.
type reviewer struct {
	self  string // this node
	log   *zap.Logger
	ports *portal.Manager // set before the loop starts
	sync  func() error    // rewrites the data path's maps (datapath.sync)

	members credential.Members // the authority's word on each node, as the hub sent it
	kick    chan struct{}      // wakes reviewLoop

	dirtyMu sync.Mutex // guards dirty
	dirty   []string   // nodes whose word changed, for reviewLoop
}

func newReviewer(self string, log *zap.Logger) *reviewer {
	return &reviewer{self: self, log: log, kick: make(chan struct{}, 1)}
}

// onMember records a word on a member, unless a newer one is known, and
// wakes the review. A revocation is for good, whatever comes after it.
func (r *reviewer) onMember(u relay.MemberUpdate) {
	if !r.members.Update(u.Node, credential.State{Generation: u.Generation, Attributes: u.Attributes, Revoked: u.Revoked}) {
		return
	}
	r.dirtyMu.Lock()
	r.dirty = append(r.dirty, u.Node)
	r.dirtyMu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// peerDenied reports whether the authority's word on node rules out a
// channel that allow must admit: node revoked, or its attributes pushed
// since fail allow. It is true for every node if this agent was revoked.
func (r *reviewer) peerDenied(node string, allow *policy.Policy) bool {
	if self, _ := r.members.Current(r.self); self.Revoked {
		return true
	}
	u, ok := r.members.Current(node)
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
func (r *reviewer) reviewLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		}
		r.reviewPending()
	}
}

// reviewPending applies the member updates recorded since the last review.
func (r *reviewer) reviewPending() {
	r.dirtyMu.Lock()
	nodes := r.dirty
	r.dirty = nil
	r.dirtyMu.Unlock()
	for _, n := range nodes {
		st, _ := r.members.Current(n)
		r.review(n, st)
	}
	if err := r.sync(); err != nil {
		r.log.Error("updating the data path after a member update failed", zap.Error(err))
	}
}

func (r *reviewer) review(node string, st credential.State) {
	if node == r.self {
		if st.Revoked {
			r.log.Error("the authority revoked this agent: it gets no new credential, peers refuse it, and its transparent inlets refuse every connection")
		}
		return
	}
	n := r.ports.ReviewPeer(node, orEmpty(st.Attributes), st.Revoked)
	r.log.Info("member update from the hub", zap.String("node", node), zap.Uint64("generation", st.Generation),
		zap.Bool("revoked", st.Revoked), zap.Any("attributes", st.Attributes), zap.Int("channels_reset", n))
}
