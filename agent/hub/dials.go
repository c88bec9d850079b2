package hub

import (
	"fmt"
	"sync"
	"time"

	"github.com/sluicehq/sluice/agent/internal/limit"
	"github.com/sluicehq/sluice/agent/policy"
	"github.com/sluicehq/sluice/agent/relay"
	"github.com/sluicehq/sluice/agent/wire"
)

// dialLimits decides whether a member's dial request may become a data
// session: each node's token bucket, the caps on sessions still waiting for
// their data connections, and the outlet policies relay owners published.
type dialLimits struct {
	limits Limits
	counts *refusals
	now    func() time.Time

	mu       sync.Mutex // guards the following
	nodes    map[string]*nodeDials
	pending  int
	policies map[*session][]*policy.Policy // absent: the session never published
}

// nodeDials is one node's dial state, kept while it has a control session
// or a pending data session.
type nodeDials struct {
	bucket   limit.Bucket
	pending  int
	sessions int
}

func newDialLimits(l Limits, counts *refusals) *dialLimits {
	return &dialLimits{limits: l, counts: counts, now: time.Now,
		nodes: map[string]*nodeDials{}, policies: map[*session][]*policy.Policy{}}
}

// nodeLocked returns node's state, making it if need be.
func (d *dialLimits) nodeLocked(node string) *nodeDials {
	n := d.nodes[node]
	if n == nil {
		n = &nodeDials{bucket: limit.NewBucket(d.limits.DialRate, d.limits.DialBurst)}
		d.nodes[node] = n
	}
	return n
}

// forgetLocked drops node's state once nothing refers to it: a node that
// reconnects gets a full bucket, but only once its sessions have ended.
func (d *dialLimits) forgetLocked(node string) {
	if n := d.nodes[node]; n != nil && n.sessions <= 0 && n.pending <= 0 {
		delete(d.nodes, node)
	}
}

// join counts an admitted control session of s's node.
func (d *dialLimits) join(s *session) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.nodeLocked(s.nodeID).sessions++
}

// leave forgets an ended control session and what it published.
func (d *dialLimits) leave(s *session) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.policies, s)
	if n := d.nodes[s.nodeID]; n != nil {
		n.sessions--
	}
	d.forgetLocked(s.nodeID)
}

// rate takes a token from node's bucket.
func (d *dialLimits) rate(node string) error {
	d.mu.Lock()
	ok := d.nodeLocked(node).bucket.Take(d.now())
	d.mu.Unlock()
	if !ok {
		d.counts.dialRate.Add(1)
		return fmt.Errorf("this node asks for more than %g data sessions a second (at most %d at once): %w",
			d.limits.DialRate, d.limits.DialBurst, wire.ErrRateLimited)
	}
	return nil
}

// reserve counts a pending session of node; release, called once the
// session started or timed out, gives it back.
func (d *dialLimits) reserve(node string) (release func(), err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.nodeLocked(node)
	switch {
	case n.pending >= d.limits.PendingPerNode:
		d.counts.dialPendingNode.Add(1)
		return nil, fmt.Errorf("this node has %d data sessions waiting for their connections, as many as allowed: %w",
			n.pending, wire.ErrRateLimited)
	case d.pending >= d.limits.Pending:
		d.counts.dialPending.Add(1)
		return nil, fmt.Errorf("the hub has %d data sessions waiting for their connections, as many as allowed: %w",
			d.pending, wire.ErrRateLimited)
	}
	n.pending++
	d.pending++
	var once sync.Once
	return func() {
		once.Do(func() {
			d.mu.Lock()
			defer d.mu.Unlock()
			n.pending--
			d.pending--
			d.forgetLocked(node)
		})
	}, nil
}

// publish records the outlet policies an owner's session published.
func (d *dialLimits) publish(s *session, exprs []string) error {
	if len(exprs) > relay.MaxPublishedPolicies {
		return fmt.Errorf("publish outlet policies: %d of them, more than %d (publish \"true\" instead): %w",
			len(exprs), relay.MaxPublishedPolicies, wire.ErrMalformed)
	}
	ps := make([]*policy.Policy, 0, len(exprs))
	for _, e := range exprs {
		p, err := policy.Parse(e)
		if err != nil {
			return fmt.Errorf("publish outlet policies: %w: %w", err, wire.ErrMalformed)
		}
		ps = append(ps, p)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.policies[s] = ps
	return nil
}

// published returns the policies owner published, and whether it did.
func (d *dialLimits) published(owner *session) ([]*policy.Policy, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ps, ok := d.policies[owner]
	return ps, ok
}

// allows checks attrs against what owner published: a filter against
// floods, not the authorization (the outlet checks its own policy on the
// channel). An owner that published nothing lets every dial through.
func (d *dialLimits) allows(owner *session, attrs map[string]string) error {
	ps, ok := d.published(owner)
	if !ok {
		return nil
	}
	for _, p := range ps {
		if p.Allows(attrs) {
			return nil
		}
	}
	d.counts.dialPolicy.Add(1)
	return fmt.Errorf("node %s published %d outlet policies, and none allows this node's attributes: %w",
		owner.nodeID, len(ps), wire.ErrDialDenied)
}
