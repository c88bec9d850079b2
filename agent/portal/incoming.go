package portal

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sluicehq/sluice/agent/internal/limit"
)

// Incoming data sessions are the hub's pushes for this agent's relays. For
// each one the outlet opens a data connection to the hub, waits for the
// hub's ack (the inlet's side has come) and runs the TLS handshake: until
// the handshake ends the session is pending. A node that floods the hub with
// dial requests would make the outlet open a connection per push; so pending
// sessions are capped in all and per inlet node, and each inlet node's
// pushes pass a token bucket. A push past a cap is dropped, counted and
// logged (a warning a second at most); the hub's pairing then times out and
// the inlet's agent learns it (relay.ErrNoSession).

// Defaults of the incoming limits (Options).
const (
	DefaultMaxPending        = 256
	DefaultMaxPendingPerNode = 64
	DefaultIncomingRate      = 100
	DefaultIncomingBurst     = 200
)

// ErrIncomingLimit means an incoming data session was dropped by the
// outlet's limits.
var ErrIncomingLimit = errors.New("incoming data session over the outlet's limit")

// IncomingCounters are the state of the incoming limits.
type IncomingCounters struct {
	Pending     int   `json:"pending"`      // sessions pending now
	PendingPeak int   `json:"pending_peak"` // the most pending at once
	Dropped     int64 `json:"dropped"`      // pushes dropped: a pending cap was reached
	RateLimited int64 `json:"rate_limited"` // pushes dropped: the inlet node's bucket was empty
}

// incomingLimits counts pending incoming sessions and drops pushes past
// the limits.
type incomingLimits struct {
	maxTotal, maxNode int
	rate              float64
	burst             int
	now               func() time.Time
	warn              limit.Every // one warning a second

	mu       sync.Mutex // guards the following
	nodes    map[string]*incomingNode
	counters IncomingCounters
}

// incomingNode is an inlet node's share, kept while it has pending
// sessions or its bucket is not full.
type incomingNode struct {
	pending int
	bucket  limit.Bucket
}

func newIncomingLimits(o Options) *incomingLimits {
	return &incomingLimits{maxTotal: o.MaxPending, maxNode: o.MaxPendingPerNode, rate: o.IncomingRate, burst: o.IncomingBurst,
		now: time.Now, nodes: map[string]*incomingNode{}}
}

// acquire counts a pending session from node, or says why not; release
// gives it back and may be called more than once.
func (l *incomingLimits) acquire(node string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	n := l.nodes[node]
	if n == nil {
		n = &incomingNode{bucket: limit.NewBucket(l.rate, l.burst)}
		l.nodes[node] = n
	}
	switch {
	case n.pending >= l.maxNode:
		l.counters.Dropped++
		return nil, fmt.Errorf("node %s has %d incoming sessions pending, as many as allowed: %w", node, n.pending, ErrIncomingLimit)
	case l.counters.Pending >= l.maxTotal:
		l.counters.Dropped++
		return nil, fmt.Errorf("%d incoming sessions pending, as many as allowed: %w", l.counters.Pending, ErrIncomingLimit)
	case !n.bucket.Take(now):
		l.counters.RateLimited++
		return nil, fmt.Errorf("node %s opens more than %g sessions a second (%d at once): %w", node, l.rate, l.burst, ErrIncomingLimit)
	}
	n.pending++
	l.counters.Pending++
	l.counters.PendingPeak = max(l.counters.PendingPeak, l.counters.Pending)
	var once sync.Once
	return func() { once.Do(func() { l.release(node, n) }) }, nil
}

func (l *incomingLimits) release(node string, n *incomingNode) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n.pending--
	l.counters.Pending--
	// Forget idle nodes, so that the map holds only nodes seen lately.
	if len(l.nodes) > l.maxTotal {
		now := l.now()
		for id, n := range l.nodes {
			if n.pending == 0 && n.bucket.Full(now) {
				delete(l.nodes, id)
			}
		}
	}
}

func (l *incomingLimits) snapshot() IncomingCounters {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counters
}
