// Package capture taps the bytes a portal carries, for `agentctl capture`:
// the plaintext of each portal connection (Decrypted) and the records of
// each channel's TCP connection to the hub or the peer agent (Wire).
//
// Pipeline (the taps run on the portal's own copy goroutines):
//
//	channel / portal copy loop ──> Point.Data: one atomic load of the
//	    subscribers; none ──> return (no allocation, no lock)
//	  ──> for each matching Sub: copy of the chunk ──> non-blocking send on
//	      its bounded queue; full ──> dropped (counted), never waits
//	Sub.Records ──> the API handler ──> agentctl, which writes the pcap
//
// A capture never changes what the portal carries and never slows it
// down beyond the copy: a reader that falls behind loses records, and
// Sub.Dropped says how many.
package capture

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is what a Point sees.
type Kind uint8

const (
	// Decrypted is a portal connection's plaintext, between the app (or
	// the outlet's own socket) and the service.
	Decrypted Kind = iota + 1
	// Wire is a channel's TCP connection to the hub or the peer agent:
	// the records as they cross it, sealed.
	Wire
)

func (k Kind) String() string {
	switch k {
	case Decrypted:
		return "decrypted"
	case Wire:
		return "wire"
	}
	return "unknown"
}

// RecordType says what a Record reports.
type RecordType uint8

const (
	// Open is a connection seen for the first time.
	Open RecordType = iota + 1
	// Data is a chunk of bytes in one direction.
	Data
	// End is the connection's end: a clean close, or a reset.
	End
)

// Record is one event of a tapped connection.
type Record struct {
	Point      *Point
	Type       RecordType
	Time       time.Time
	FromClient bool   // Data: the direction
	Offset     uint64 // Data: bytes of this direction published before this chunk
	Data       []byte // Data: a copy, the Record's own
	Reset      bool   // End: ended by a reset (or an error), not a clean close
}

// Filter selects the Points a Sub receives; zero fields match everything.
type Filter struct {
	Kind   Kind
	Portal string
	Peer   string // the peer agent's node ID
}

func (f Filter) match(p *Point) bool {
	return (f.Kind == 0 || f.Kind == p.Kind) &&
		(f.Portal == "" || f.Portal == p.Portal) &&
		(f.Peer == "" || f.Peer == p.Peer)
}

// Taps is where Points publish and Subs subscribe: one per agent. The zero
// value is ready; a nil *Taps makes nil Points, which do nothing.
type Taps struct {
	subs atomic.Pointer[[]*Sub] // nil while nobody captures: the hot path's one load
	ids  atomic.Uint64

	mu sync.Mutex // serializes changes to subs
}

// DefaultDepth is how many records a Sub's queue holds.
const DefaultDepth = 4096

// Subscribe starts a capture of what f selects; depth bounds its queue
// (DefaultDepth when 0). Close ends it.
func (t *Taps) Subscribe(f Filter, depth int) *Sub {
	if depth <= 0 {
		depth = DefaultDepth
	}
	s := &Sub{taps: t, f: f, ch: make(chan Record, depth)}
	t.mu.Lock()
	defer t.mu.Unlock()
	var next []*Sub
	if cur := t.subs.Load(); cur != nil {
		next = slices.Clone(*cur)
	}
	next = append(next, s)
	t.subs.Store(&next)
	return s
}

// Capturing reports whether anyone captures.
func (t *Taps) Capturing() bool { return t != nil && t.subs.Load() != nil }

func (t *Taps) remove(s *Sub) {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.subs.Load()
	if cur == nil {
		return
	}
	next := slices.DeleteFunc(slices.Clone(*cur), func(x *Sub) bool { return x == s })
	if len(next) == 0 {
		t.subs.Store(nil)
		return
	}
	t.subs.Store(&next)
}

// Sub is one capture: the records its Filter selects, in a bounded queue.
type Sub struct {
	taps    *Taps
	f       Filter
	ch      chan Record
	dropped atomic.Uint64
	once    sync.Once
}

// Records is the queue; it is never closed (publishers may still hold the
// Sub for a moment after Close): stop reading after Close.
func (s *Sub) Records() <-chan Record { return s.ch }

// Dropped is how many records the queue had no room for.
func (s *Sub) Dropped() uint64 { return s.dropped.Load() }

// Close ends the capture; taps stop publishing to it.
func (s *Sub) Close() { s.once.Do(func() { s.taps.remove(s) }) }

func (s *Sub) offer(r Record) {
	select {
	case s.ch <- r:
	default:
		s.dropped.Add(1)
	}
}

// Point is one tapped connection. Its exported fields are set by NewPoint
// and never change.
type Point struct {
	taps   *Taps
	ID     uint64
	Kind   Kind
	Portal string
	Peer   string // the peer agent's node ID, when known
	// Client and Server are the connection's ends as the capture shows
	// them: who opened it and who accepted it.
	Client, Server netip.AddrPort

	sendIsClient bool             // Send's direction is client to server
	off          [2]atomic.Uint64 // bytes published: [0] client to server, [1] back
	ended        atomic.Bool
}

// NewPoint makes the tap of one connection; nil if t is nil. sendIsClient
// says whether what the tapping side sends (Send) goes from Client to
// Server.
func (t *Taps) NewPoint(kind Kind, portal, peer string, client, server netip.AddrPort, sendIsClient bool) *Point {
	if t == nil {
		return nil
	}
	return &Point{taps: t, ID: t.ids.Add(1), Kind: kind, Portal: portal, Peer: peer,
		Client: client, Server: server, sendIsClient: sendIsClient}
}

// Send taps b, which the tapping side sends. It is safe on a nil Point and
// costs one atomic load while nobody captures.
func (p *Point) Send(b []byte) {
	if p != nil {
		p.Data(p.sendIsClient, b)
	}
}

// Receive taps b, which the tapping side received.
func (p *Point) Receive(b []byte) {
	if p != nil {
		p.Data(!p.sendIsClient, b)
	}
}

// Data taps b in the given direction. One goroutine at a time per
// direction.
func (p *Point) Data(fromClient bool, b []byte) {
	if p == nil || len(b) == 0 {
		return
	}
	subs := p.taps.subs.Load()
	if subs == nil {
		return
	}
	d := 1
	if fromClient {
		d = 0
	}
	off := p.off[d].Add(uint64(len(b))) - uint64(len(b))
	now := time.Now()
	var cp []byte // shared by the subscribers: nobody writes to it
	for _, s := range *subs {
		if !s.f.match(p) {
			continue
		}
		if cp == nil {
			cp = slices.Clone(b)
		}
		s.offer(Record{Point: p, Type: Data, Time: now, FromClient: fromClient, Offset: off, Data: cp})
	}
}

// Open reports the connection as it begins, so that it shows even if it
// carries nothing.
func (p *Point) Open() { p.event(Open, false) }

// End reports the connection's end, once: reset for an abort or an error.
func (p *Point) End(reset bool) {
	if p != nil && p.ended.CompareAndSwap(false, true) {
		p.event(End, reset)
	}
}

func (p *Point) event(typ RecordType, reset bool) {
	if p == nil {
		return
	}
	subs := p.taps.subs.Load()
	if subs == nil {
		return
	}
	now := time.Now()
	for _, s := range *subs {
		if s.f.match(p) {
			s.offer(Record{Point: p, Type: typ, Time: now, Reset: reset})
		}
	}
}
