package portal

import (
	"math/rand/v2"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Paths by peer (docs/direct-paths.md). For each outlet node its inlets
// opened channels to, the inlet side keeps whether the channels go direct
// or through the hub, since when, the newest channel's round trip (to the
// peer when direct, to the hub when relayed) and the channels open by path.
// A direct attempt that fails, or a direct channel that breaks, makes the
// peer relayed: its new channels go to the hub at once, with no attempt,
// until a background attempt (after backoffMin, doubling to backoffMax,
// jittered) opens a direct channel, which goes to the warm pool; the idle
// relayed channels to the peer are closed then, so that the next
// connections go direct.
var (
	backoffMin = 5 * time.Second // a variable for tests only
	backoffMax = 5 * time.Minute
)

// maxAttempts bounds the direct attempts to one peer at once; a new
// channel past it goes through the hub at once. Where nothing drops SYNs
// (no firewall in front of either agent) an attempt succeeds only when the
// two sides' connects overlap in time (direct.go): many at once starve
// each other of the CPU and all fall back.
const maxAttempts = 2

// Path names, in PeerPath and metrics.
const (
	PathDirect  = "direct"
	PathRelayed = "relayed"
)

// PeerPath is the path of the channels to one peer (agentctl status).
type PeerPath struct {
	Node  string    `json:"node"`
	Path  string    `json:"path"` // PathDirect or PathRelayed
	Since time.Time `json:"since"`
	// RTT is the kernel's smoothed round trip time of the newest channel's
	// connection: to the peer when direct, to the hub when relayed.
	RTT time.Duration `json:"rtt_ns"`
	// Channels open now, by path.
	DirectChannels  int64 `json:"direct_channels"`
	RelayedChannels int64 `json:"relayed_channels"`
	// NextAttempt is when a relayed peer gets its next background
	// attempt at a direct path, if one is planned.
	NextAttempt time.Time `json:"next_attempt,omitzero"`
}

// DirectCounters count channels by path and direct attempts by outcome.
type DirectCounters struct {
	ChannelsDirect  int64 `json:"channels_direct"`      // channels opened direct
	ChannelsRelayed int64 `json:"channels_relayed"`     // channels opened through the hub
	AttemptsOK      int64 `json:"attempts_ok"`          // direct attempts that made a channel
	AttemptsFailed  int64 `json:"attempts_failed"`      // that fell back to the hub
	NotOffered      int64 `json:"attempts_not_offered"` // asked for, not offered by the hub
	Breaks          int64 `json:"breaks"`               // direct channels whose connection broke
}

type directCounters struct {
	ChannelsDirect, ChannelsRelayed, AttemptsOK, AttemptsFailed, NotOffered, Breaks atomic.Int64
}

func (c *directCounters) snapshot() DirectCounters {
	return DirectCounters{ChannelsDirect: c.ChannelsDirect.Load(), ChannelsRelayed: c.ChannelsRelayed.Load(),
		AttemptsOK: c.AttemptsOK.Load(), AttemptsFailed: c.AttemptsFailed.Load(), NotOffered: c.NotOffered.Load(), Breaks: c.Breaks.Load()}
}

// peerState is one peer's path.
type peerState struct {
	known   bool // a channel was opened to it
	direct  bool
	since   time.Time
	rtt     time.Duration
	open    [2]int64 // by path: 0 relayed, 1 direct
	blocked bool     // relayed after a failure: no attempt until a background one succeeds
	backoff time.Duration
	retry   *time.Timer
	retryAt time.Time
	in      *inlet // the inlet of its newest channel, for background attempts
	// epoch counts the peer's turns to direct: a break of a channel opened
	// in an earlier one is old news (broke).
	epoch uint64
}

// paths are the peers' paths.
type paths struct {
	counters directCounters

	rawMu sync.Mutex // guards raws
	raws  map[*net.TCPConn]struct{}

	mu       sync.Mutex // guards peers and inflight
	peers    map[string]*peerState
	inflight map[string]int // direct attempts under way, by peer
}

func (p *paths) peerLocked(node string) *peerState {
	if p.peers == nil {
		p.peers = map[string]*peerState{}
	}
	ps := p.peers[node]
	if ps == nil {
		ps = &peerState{backoff: backoffMin}
		p.peers[node] = ps
	}
	return ps
}

// try reports whether a new channel to node may try a direct path (force:
// a background attempt, which may even if node is relayed), and counts the
// attempt until done is called.
func (p *paths) try(node string, force bool) (done func(), ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ps := p.peers[node]; ps != nil && ps.blocked && !force || p.inflight[node] >= maxAttempts {
		return nil, false
	}
	if p.inflight == nil {
		p.inflight = map[string]int{}
	}
	p.inflight[node]++
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.inflight[node]--; p.inflight[node] <= 0 {
				delete(p.inflight, node)
			}
		})
	}, true
}

// newerThan reports whether node is direct in a turn after epoch.
func (p *paths) newerThan(node string, epoch uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	ps := p.peers[node]
	return ps != nil && ps.direct && ps.epoch > epoch
}

// isDirect reports whether node's channels go direct now.
func (p *paths) isDirect(node string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	ps := p.peers[node]
	return ps != nil && ps.direct
}

// opened records a channel to node on its path; closed, called when it
// ends, takes it off the count.
func (p *paths) opened(node string, direct bool, rtt time.Duration, in *inlet) (epoch uint64, closed func()) {
	i := 0
	if direct {
		i = 1
		p.counters.ChannelsDirect.Add(1)
	} else {
		p.counters.ChannelsRelayed.Add(1)
	}
	p.mu.Lock()
	ps := p.peerLocked(node)
	if !ps.known || ps.direct != direct {
		ps.since = time.Now()
	}
	// A new turn to direct is the first path or one made anew after a
	// failure or a break (blocked), not a relayed channel in between (past
	// the attempts a peer may make at once).
	if direct && (!ps.known || ps.blocked) {
		ps.epoch++
	}
	ps.known, ps.direct, ps.rtt, ps.in = true, direct, rtt, in
	ps.open[i]++
	if direct {
		ps.blocked, ps.backoff = false, backoffMin
	}
	epoch = ps.epoch
	p.mu.Unlock()
	var once sync.Once
	return epoch, func() {
		once.Do(func() {
			p.mu.Lock()
			ps.open[i]--
			p.mu.Unlock()
		})
	}
}

// fellBack records a failed direct attempt to node: relayed at once, and a
// background attempt planned.
func (m *Manager) fellBack(node string, in *inlet) {
	m.paths.counters.AttemptsFailed.Add(1)
	m.relayed(node, in)
}

// broke records that a direct channel to node broke: relayed at once, the
// idle direct channels to it closed, and a background attempt planned.
//
// A channel opened before the peer's latest turn to direct (epoch) tells
// of a path already replaced: a connection that was on it when it broke
// and took TCP_USER_TIMEOUT to say so, while a newer one was found dead
// at once and a background attempt made the path anew. It is counted and
// changes nothing.
func (m *Manager) broke(node string, epoch uint64, in *inlet) {
	m.paths.counters.Breaks.Add(1)
	if m.paths.newerThan(node, epoch) {
		m.log.Debug("a direct channel of a path already made anew broke", zap.String("node", node))
		return
	}
	m.log.Info("direct path broke; new connections go through the hub", zap.String("node", node))
	m.relayed(node, in)
	m.dropWarm(node, true)
}

func (m *Manager) relayed(node string, in *inlet) {
	p := &m.paths
	p.mu.Lock()
	defer p.mu.Unlock()
	ps := p.peerLocked(node)
	if ps.direct || !ps.known {
		ps.since = time.Now()
	}
	ps.known, ps.direct, ps.blocked = true, false, true
	if in != nil {
		ps.in = in
	}
	if ps.retry != nil || m.ctx.Err() != nil {
		return
	}
	wait := jitter(ps.backoff)
	ps.backoff = min(2*ps.backoff, backoffMax)
	ps.retryAt = time.Now().Add(wait)
	ps.retry = time.AfterFunc(wait, func() { m.attemptDirect(node) })
}

// jitter draws a wait in [d/2, d).
func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d/2) }

// attemptDirect is a background attempt at a direct path to node: it opens
// a channel through the inlet of the peer's newest channel and keeps it
// warm if it went direct.
func (m *Manager) attemptDirect(node string) {
	p := &m.paths
	p.mu.Lock()
	ps := p.peers[node]
	in := ps.in
	ps.retry, ps.retryAt = nil, time.Time{}
	p.mu.Unlock()
	if in == nil || in.ctx.Err() != nil || !m.enter() {
		return
	}
	defer m.leave()
	s, err := m.openChannel(in, true)
	if err != nil {
		m.log.Debug("background direct attempt failed", zap.String("node", node), zap.Error(err))
		m.relayed(node, in)
		return
	}
	if !s.direct {
		s.close()
		m.relayed(node, in)
		return
	}
	m.log.Info("direct path made again", zap.String("node", node))
	if err := s.ch.WriteControl(ctlWarm); err != nil {
		s.close()
		return
	}
	in.pool.put(s)
}

// dropWarm closes the idle channels to node on the path direct.
func (m *Manager) dropWarm(node string, direct bool) {
	m.mu.Lock()
	inlets := make([]*inlet, 0, len(m.inlets))
	for _, in := range m.inlets {
		inlets = append(inlets, in)
	}
	m.mu.Unlock()
	for _, in := range inlets {
		in.pool.dropIf(func(s *session) bool { return s.peer.NodeID == node && s.direct == direct })
	}
}

// Peers lists the paths to the peers the inlets opened channels to.
func (m *Manager) Peers() []PeerPath {
	p := &m.paths
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]PeerPath, 0, len(p.peers))
	for node, ps := range p.peers {
		if !ps.known {
			continue
		}
		pp := PeerPath{Node: node, Path: PathRelayed, Since: ps.since, RTT: ps.rtt,
			RelayedChannels: ps.open[0], DirectChannels: ps.open[1], NextAttempt: ps.retryAt}
		if ps.direct {
			pp.Path = PathDirect
		}
		out = append(out, pp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// Direct returns the counters of channels by path and direct attempts.
func (m *Manager) Direct() DirectCounters { return m.paths.counters.snapshot() }

// stopPaths stops the background attempts.
func (p *paths) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ps := range p.peers {
		if ps.retry != nil {
			ps.retry.Stop()
		}
	}
}

// trackRaw records the connection of a live direct channel (for tests:
// AbortDirectForTest); the returned func forgets it.
func (p *paths) trackRaw(c *net.TCPConn) (forget func()) {
	p.rawMu.Lock()
	if p.raws == nil {
		p.raws = map[*net.TCPConn]struct{}{}
	}
	p.raws[c] = struct{}{}
	p.rawMu.Unlock()
	return func() {
		p.rawMu.Lock()
		delete(p.raws, c)
		p.rawMu.Unlock()
	}
}

// lastPeer is the node that owned in's relay at its last channel, or "".
func (in *inlet) lastPeer() string {
	if p := in.peer.Load(); p != nil {
		return *p
	}
	return ""
}
