// Package flowlog keeps the agent's flow log: one event per portal
// connection opened, closed or refused (by the inlet's or the outlet's
// policy, or by the kernel), a bounded ring of the recent ones, and the
// observers that stream them (agentctl observe).
//
// Recording never waits for an observer: each has a bounded queue, and an
// event that finds it full is dropped for that observer and counted; the
// observer learns how many it lost (an event of type "lost").
package flowlog

import (
	"sync"
	"time"
)

// Event types.
const (
	TypeOpen    = "open"    // a connection was allowed and its stream opened
	TypeClose   = "close"   // an allowed connection ended (bytes, duration, error)
	TypeRefused = "refused" // a connection was refused (Reason, By)
	TypeLost    = "lost"    // this observer fell behind and lost Lost events
)

// Directions.
const (
	Inlet  = "inlet"
	Outlet = "outlet"
)

// Verdicts.
const (
	Allowed = "allowed"
	Refused = "refused"
)

// Who refused a connection (Event.By).
const (
	ByKernel      = "kernel"       // the TC program: Reason is its verdict
	ByLocalPolicy = "local policy" // the agent's local policy (which workloads may use an inlet), in user space
	// ByPolicy is the attribute policy between the two agents: the inlet's
	// --allow on the outlet's agent, the outlet's on the inlet's, or a
	// credential the project replaced or revoked; Reason says which.
	ByPolicy = "policy"
	ByLimit  = "limit" // a connection limit
)

// Event is one entry of the flow log. Its JSON is apitype.FlowEvent's.
type Event struct {
	Time      time.Time `json:"time"`
	Type      string    `json:"type"`                // TypeOpen, TypeClose, TypeRefused or TypeLost
	Portal    string    `json:"portal,omitempty"`    // the inlet's or outlet's name
	Direction string    `json:"direction,omitempty"` // Inlet or Outlet
	Verdict   string    `json:"verdict,omitempty"`   // Allowed or Refused
	// Reason says why a connection was refused: a kernel verdict ("workload
	// not allowed", "spoofed source", "service denied", "no listener") or
	// the policy's error.
	Reason string `json:"reason,omitempty"`
	By     string `json:"by,omitempty"` // who refused it (ByKernel, ...)
	// Peer is the node at the other end (the outlet's agent for an inlet,
	// the inlet's for an outlet) and PeerAttributes its attributes, as its
	// credential says.
	Peer           string            `json:"peer,omitempty"`
	PeerAttributes map[string]string `json:"peer_attributes,omitempty"`
	// Workload is the local workload that opened an inlet's connection, by
	// name, or "#N" for a number the agent no longer knows.
	Workload string `json:"workload,omitempty"`
	Client   string `json:"client,omitempty"` // the application's address
	Target   string `json:"target,omitempty"` // the service: the address it dialed (inlet) or the outlet's --to
	// On close: bytes from the client towards the target and back, how long
	// the connection lasted, and what ended it, if not a clean close.
	BytesSent     int64   `json:"bytes_sent,omitempty"`
	BytesReceived int64   `json:"bytes_received,omitempty"`
	Duration      float64 `json:"duration_seconds,omitempty"`
	Error         string  `json:"error,omitempty"`
	Lost          uint64  `json:"lost,omitempty"` // TypeLost: events this observer lost since the last report
}

// Filter selects events; an empty field matches everything. A filter never
// matches TypeLost events: those are the observer's own.
type Filter struct {
	Portal   string
	Verdict  string // Allowed or Refused
	Workload string
	Peer     string
}

// Match reports whether e passes f.
func (f Filter) Match(e *Event) bool {
	return (f.Portal == "" || f.Portal == e.Portal) &&
		(f.Verdict == "" || f.Verdict == e.Verdict) &&
		(f.Workload == "" || f.Workload == e.Workload) &&
		(f.Peer == "" || f.Peer == e.Peer)
}

// Defaults of New.
const (
	DefaultRing  = 4096 // events kept for --last
	DefaultQueue = 1024 // events queued per observer before it loses them
)

// Log is the flow log. The zero value is not usable; a nil *Log records
// nothing, so that portals without one need no checks.
type Log struct {
	now func() time.Time

	mu    sync.Mutex // guards the following
	ring  []Event    // the newest len(ring) events, oldest at next once full
	next  int
	full  bool
	subs  map[*Observer]struct{}
	total uint64 // events recorded
}

// New makes a log that keeps the last ring events (DefaultRing if 0).
func New(ring int) *Log {
	if ring <= 0 {
		ring = DefaultRing
	}
	return &Log{now: time.Now, ring: make([]Event, ring), subs: map[*Observer]struct{}{}}
}

// Record adds e, stamped with the time if it has none, to the ring and to
// every observer whose filter it passes, without ever waiting.
func (l *Log) Record(e Event) {
	if l == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total++
	l.ring[l.next] = e
	l.next = (l.next + 1) % len(l.ring)
	if l.next == 0 {
		l.full = true
	}
	for o := range l.subs {
		if o.filter.Match(&e) {
			o.offer(e)
		}
	}
}

// Recent returns up to n of the newest events that pass f, oldest first.
func (l *Log) Recent(f Filter, n int) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.recentLocked(f, n)
}

func (l *Log) recentLocked(f Filter, n int) []Event {
	if n <= 0 {
		return nil
	}
	size := l.next
	if l.full {
		size = len(l.ring)
	}
	var out []Event
	for i := 1; i <= size && len(out) < n; i++ {
		e := &l.ring[(l.next-i+len(l.ring))%len(l.ring)]
		if f.Match(e) {
			out = append(out, *e)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// Observe returns the newest last events that pass f and, if follow, an
// Observer that receives the ones recorded from then on (nil otherwise),
// with a queue of queue events (DefaultQueue if 0). No event is both in
// the past ones and sent to the observer. Close the observer.
func (l *Log) Observe(f Filter, last int, follow bool, queue int) ([]Event, *Observer) {
	if queue <= 0 {
		queue = DefaultQueue
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	past := l.recentLocked(f, last)
	if !follow {
		return past, nil
	}
	o := &Observer{log: l, filter: f, c: make(chan Event, queue)}
	l.subs[o] = struct{}{}
	return past, o
}

// Observer receives the events of a Log as they are recorded.
type Observer struct {
	log    *Log
	filter Filter
	c      chan Event

	lost uint64 // guarded by log.mu: dropped since the last Lost call
}

// offer queues e, or counts it lost; the caller holds log.mu.
func (o *Observer) offer(e Event) {
	select {
	case o.c <- e:
	default:
		o.lost++
	}
}

// C delivers the events.
func (o *Observer) C() <-chan Event { return o.c }

// Lost returns how many events were dropped because the queue was full
// since the last call, and resets the count.
func (o *Observer) Lost() uint64 {
	o.log.mu.Lock()
	defer o.log.mu.Unlock()
	n := o.lost
	o.lost = 0
	return n
}

// Close stops the observer; its channel is not closed (Record may not
// block on it, and a reader selects on its own context).
func (o *Observer) Close() {
	o.log.mu.Lock()
	defer o.log.mu.Unlock()
	delete(o.log.subs, o)
}
