package portal

import (
	"context"
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
// dial requests (or a hostile hub) would make the outlet open a connection
// per push; so pending sessions are capped in all and per inlet node, and
// each inlet node's pushes pass a token bucket. A push past a limit waits
// for room, at most incomingWait and with a bounded number of pushes waiting
// per node and in all, so that an honest burst is delayed, not lost; a push
// that cannot wait is dropped, counted and logged (a warning a second at
// most); the hub's pairing then times out and the inlet's agent learns it
// (relay.ErrNoSession).

// Defaults of the incoming limits (Options).
const (
	DefaultMaxPending        = 256
	DefaultMaxPendingPerNode = 64
	DefaultIncomingRate      = 1000
	DefaultIncomingBurst     = 2000
)

// incomingWait bounds how long a push waits for room: well inside the hub's
// 10 s wait for the session's two data connections. waitFactor: pushes
// waiting per node, and in all, are at most waitFactor times the pending
// caps.
const (
	incomingWait = 5 * time.Second
	waitFactor   = 4
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
	Waited      int64 `json:"waited"`       // pushes that waited for room (and were then served or dropped)
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
	waiting  int           // pushes waiting for room, all nodes
	changed  chan struct{} // closed (and replaced) when a pending session ends
	counters IncomingCounters
}

// incomingNode is an inlet node's share, kept while it has pending
// sessions or its bucket is not full.
type incomingNode struct {
	pending int
	waiting int
	bucket  limit.Bucket
}

func newIncomingLimits(o Options) *incomingLimits {
	return &incomingLimits{maxTotal: o.MaxPending, maxNode: o.MaxPendingPerNode, rate: o.IncomingRate, burst: o.IncomingBurst,
		now: time.Now, nodes: map[string]*incomingNode{}, changed: make(chan struct{})}
}

// acquire counts a pending session from node, waiting for room until ctx
// is done; or it says why not. The release it returns gives the session
// back and may be called more than once.
func (l *incomingLimits) acquire(ctx context.Context, node string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.nodes[node]
	if n == nil {
		n = &incomingNode{bucket: limit.NewBucket(l.rate, l.burst)}
		l.nodes[node] = n
	}
	waited := false
	for {
		delay, err := l.tryLocked(node, n)
		if err == nil {
			break
		}
		if ctx.Err() != nil || n.waiting >= waitFactor*l.maxNode || l.waiting >= waitFactor*l.maxTotal {
			if delay > 0 {
				l.counters.RateLimited++
			} else {
				l.counters.Dropped++
			}
			return nil, err
		}
		if !waited {
			waited = true
			l.counters.Waited++
		}
		n.waiting++
		l.waiting++
		l.waitLocked(ctx, delay)
		n.waiting--
		l.waiting--
	}
	n.pending++
	l.counters.Pending++
	l.counters.PendingPeak = max(l.counters.PendingPeak, l.counters.Pending)
	var once sync.Once
	return func() { once.Do(func() { l.release(node, n) }) }, nil
}

// tryLocked takes a token from n's bucket if the pending caps allow a new
// session. Otherwise it says why, and how long until the bucket has a token
// (0: the wait is for a pending session to end).
func (l *incomingLimits) tryLocked(node string, n *incomingNode) (time.Duration, error) {
	now := l.now()
	switch {
	case n.pending >= l.maxNode:
		return 0, fmt.Errorf("node %s has %d incoming sessions pending, as many as allowed: %w", node, n.pending, ErrIncomingLimit)
	case l.counters.Pending >= l.maxTotal:
		return 0, fmt.Errorf("%d incoming sessions pending, as many as allowed: %w", l.counters.Pending, ErrIncomingLimit)
	case !n.bucket.Take(now):
		return max(n.bucket.Wait(now), time.Millisecond),
			fmt.Errorf("node %s opens more than %g sessions a second (%d at once): %w", node, l.rate, l.burst, ErrIncomingLimit)
	}
	return 0, nil
}

// waitLocked waits, with l.mu released, until a pending session ends, ctx
// is done or, if delay > 0, delay has passed.
func (l *incomingLimits) waitLocked(ctx context.Context, delay time.Duration) {
	changed := l.changed
	l.mu.Unlock()
	defer l.mu.Lock()
	var timeout <-chan time.Time
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ctx.Done():
	case <-changed:
	case <-timeout:
	}
}

func (l *incomingLimits) release(node string, n *incomingNode) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n.pending--
	l.counters.Pending--
	close(l.changed)
	l.changed = make(chan struct{})
	// Forget idle nodes, so that the map holds only nodes seen lately.
	if len(l.nodes) > l.maxTotal {
		now := l.now()
		for id, n := range l.nodes {
			if n.pending == 0 && n.waiting == 0 && n.bucket.Full(now) {
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
