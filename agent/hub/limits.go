package hub

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/internal/limit"
)

// Limits bound what peers can make the hub hold or do: connections that have
// not authenticated yet (anyone can open them) and the data sessions members
// ask for. Zero values mean the defaults, which keep a hub with the usual
// file descriptor limit (20000 here; Go raises the soft limit to the hard one)
// far from it: at most 1024 unauthenticated connections and 2 × 4096 pending
// data connections. docs/hub.md explains each one.
type Limits struct {
	// Unauthenticated bounds the connections, control or data, that have
	// not authenticated yet, counted from accept: a control connection
	// until its first message is admitted, a data connection until its
	// token matched a session. Past it the hub closes new ones at once.
	// Default 1024.
	Unauthenticated int `json:"unauthenticated,omitempty"`
	// PerSource bounds those from one source: one IPv4 address, or one
	// IPv6 /64. Default 64.
	PerSource int `json:"per_source,omitempty"`
	// PerMemberSource replaces PerSource for a member source: one from
	// which a member authenticated in the last 24 hours, whose agents open
	// data connections in bursts (a NAT may hide many). Default 256.
	PerMemberSource int `json:"per_member_source,omitempty"`
	// Reserved, of Unauthenticated, is kept for member sources: others may
	// use only Unauthenticated-Reserved, so a flood from new addresses
	// cannot starve members. Default 256.
	Reserved int `json:"reserved,omitempty"`
	// DialRate and DialBurst are each node's token bucket for dial
	// requests: per second, and at once. Defaults 1000 and 2000.
	DialRate  float64 `json:"dial_rate,omitempty"`
	DialBurst int     `json:"dial_burst,omitempty"`
	// PendingPerNode bounds the data sessions a node asked for that have
	// not started (the hub waits for both data connections); Pending
	// bounds them hub-wide. Defaults 256 and 4096.
	PendingPerNode int `json:"pending_per_node,omitempty"`
	Pending        int `json:"pending,omitempty"`
}

// Defaults of Limits.
const (
	DefaultUnauthenticated = 1024
	DefaultPerSource       = 64
	DefaultPerMemberSource = 256
	DefaultReserved        = 256
	DefaultDialRate        = 1000
	DefaultDialBurst       = 2000
	DefaultPendingPerNode  = 256
	DefaultPending         = 4096
)

// knownFor is how long a source from which a member authenticated keeps
// its share of the reserved room, and maxKnown how many such sources the
// hub remembers (the oldest goes first).
const (
	knownFor = 24 * time.Hour
	maxKnown = 4096
)

// ErrBadLimits means a Limits value makes no sense.
var ErrBadLimits = errors.New("invalid hub limits")

// WithDefaults returns l with every zero field set to its default.
func (l Limits) WithDefaults() Limits {
	set := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	set(&l.Unauthenticated, DefaultUnauthenticated)
	set(&l.PerSource, DefaultPerSource)
	set(&l.PerMemberSource, DefaultPerMemberSource)
	set(&l.Reserved, DefaultReserved)
	set(&l.DialBurst, DefaultDialBurst)
	set(&l.PendingPerNode, DefaultPendingPerNode)
	set(&l.Pending, DefaultPending)
	if l.DialRate == 0 {
		l.DialRate = DefaultDialRate
	}
	return l
}

// Check reports a limit that is negative or that leaves sources that are
// not members' no room at all: it checks l with its defaults filled in. A
// per-source or per-node limit above the hub-wide one is allowed (the
// hub-wide one applies too).
func (l Limits) Check() error {
	l = l.WithDefaults()
	switch {
	case l.Unauthenticated < 0 || l.PerSource < 0 || l.PerMemberSource < 0 || l.Reserved < 0 || l.DialRate < 0 ||
		l.DialBurst < 0 || l.PendingPerNode < 0 || l.Pending < 0:
		return fmt.Errorf("limits must not be negative: %+v: %w", l, ErrBadLimits)
	case l.Reserved >= l.Unauthenticated:
		return fmt.Errorf("the room reserved for members (%d) must be less than the unauthenticated connections allowed (%d): %w",
			l.Reserved, l.Unauthenticated, ErrBadLimits)
	}
	return nil
}

// Refusals count what the hub's limits refused since it started. The JSON
// names are part of the admin API (GET /v1/stats) and stay stable.
type Refusals struct {
	// Unauthenticated: new connections closed at accept because the
	// hub-wide cap on unauthenticated connections (or its part open to
	// sources no member used recently) was reached.
	Unauthenticated int64 `json:"unauthenticated"`
	// PerSource: new connections closed at accept because their source
	// had its share of unauthenticated connections (PerSource, or
	// PerMemberSource for a member source).
	PerSource int64 `json:"unauthenticated_per_source"`
	// TooLarge: control messages longer than the limit (64 KiB).
	TooLarge int64 `json:"message_too_large"`
	// Malformed: control messages that were not one JSON object.
	Malformed int64 `json:"message_malformed"`
	// DialRate: dial requests over the node's token bucket.
	DialRate int64 `json:"dial_rate"`
	// DialPendingNode and DialPending: dial requests refused because the
	// node, or the hub, had as many sessions waiting as allowed.
	DialPendingNode int64 `json:"dial_pending_node"`
	DialPending     int64 `json:"dial_pending"`
	// DialPolicy: dial requests from a node whose attributes no outlet
	// policy the relay's owner published allows.
	DialPolicy int64 `json:"dial_policy"`
}

// refusals are the live counters behind Refusals.
type refusals struct {
	unauthenticated, perSource, tooLarge, malformed atomic.Int64
	dialRate, dialPendingNode, dialPending          atomic.Int64
	dialPolicy                                      atomic.Int64
}

func (r *refusals) snapshot() Refusals {
	return Refusals{
		Unauthenticated: r.unauthenticated.Load(), PerSource: r.perSource.Load(),
		TooLarge: r.tooLarge.Load(), Malformed: r.malformed.Load(),
		DialRate: r.dialRate.Load(), DialPendingNode: r.dialPendingNode.Load(), DialPending: r.dialPending.Load(),
		DialPolicy: r.dialPolicy.Load(),
	}
}

// sourceOf is the key a connection's source is counted under: its IPv4
// address, or its IPv6 /64 (one host usually holds a whole /64).
func sourceOf(a net.Addr) netip.Prefix {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}
	}
	ip := ta.AddrPort().Addr().Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// gate admits new connections under the unauthenticated caps.
type gate struct {
	limits Limits
	counts *refusals
	log    *zap.Logger
	now    func() time.Time
	every  [2]limit.Every // log sampling of the two refusals, one a second

	mu       sync.Mutex // guards the following
	total    int
	peak     int // the most at once
	srcPeak  int // the most from one source at once
	bySource map[netip.Prefix]int
	known    map[netip.Prefix]time.Time // sources members authenticated from
}

func newGate(l Limits, counts *refusals, log *zap.Logger) *gate {
	return &gate{limits: l, counts: counts, log: log, now: time.Now,
		bySource: map[netip.Prefix]int{}, known: map[netip.Prefix]time.Time{}}
}

// pass is one admitted connection's place under the caps, held until it
// authenticates or ends.
type pass struct {
	g    *gate
	src  netip.Prefix
	once sync.Once
}

// enter admits a connection from src, or returns nil: the caller closes it.
func (g *gate) enter(src netip.Prefix) *pass {
	g.mu.Lock()
	now := g.now()
	room, perSource := g.limits.Unauthenticated, g.limits.PerMemberSource
	if t, ok := g.known[src]; !ok || now.Sub(t) > knownFor {
		room, perSource = room-g.limits.Reserved, g.limits.PerSource
	}
	switch {
	case g.bySource[src] >= perSource:
		n := g.bySource[src]
		g.mu.Unlock()
		g.counts.perSource.Add(1)
		g.refused(0, "unauthenticated connection closed: its source has as many as allowed",
			zap.Stringer("source", src), zap.Int("per_source", n))
		return nil
	case g.total >= room:
		total := g.total
		g.mu.Unlock()
		g.counts.unauthenticated.Add(1)
		g.refused(1, "unauthenticated connection closed: the hub has as many as allowed",
			zap.Stringer("source", src), zap.Int("unauthenticated", total), zap.Int("room_for_source", room))
		return nil
	}
	g.total++
	g.peak = max(g.peak, g.total)
	g.bySource[src]++
	g.srcPeak = max(g.srcPeak, g.bySource[src])
	g.mu.Unlock()
	return &pass{g: g, src: src}
}

// refused logs a refusal at debug, at most once a second per kind.
func (g *gate) refused(kind int, msg string, fields ...zap.Field) {
	if ok, n := g.every[kind].Allow(g.now()); ok {
		g.log.Debug(msg, append(fields, zap.Int64("more_not_logged", n))...)
	}
}

// leave gives the connection's place back; later calls do nothing.
func (p *pass) leave() {
	if p == nil {
		return
	}
	p.once.Do(func() {
		g := p.g
		g.mu.Lock()
		defer g.mu.Unlock()
		g.total--
		if g.bySource[p.src]--; g.bySource[p.src] <= 0 {
			delete(g.bySource, p.src)
		}
	})
}

// authenticated gives the place back and remembers the source as a
// member's.
func (p *pass) authenticated() {
	if p == nil {
		return
	}
	p.leave()
	p.g.member(p.src)
}

// member records that a member authenticated from src.
func (g *gate) member(src netip.Prefix) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if _, ok := g.known[src]; !ok && len(g.known) >= maxKnown {
		var oldest netip.Prefix
		var at time.Time
		for p, t := range g.known {
			if at.IsZero() || t.Before(at) {
				oldest, at = p, t
			}
		}
		delete(g.known, oldest)
	}
	g.known[src] = now
}

// usage returns the unauthenticated connections now, the most at once, and
// the most from one source at once.
func (g *gate) usage() (now, peak, srcPeak int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.total, g.peak, g.srcPeak
}
