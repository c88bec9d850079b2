package portal

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/agent/channel"
	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/pipe"
)

// Warm channels. A channel whose connection ended cleanly on both sides
// (end records both ways, nothing pending) goes back to its inlet's pool and
// carries the inlet's next connection: that connection costs one open
// request and the outlet's connect, not a control round trip, a TCP
// connection to the hub and a TLS handshake. The outlet keeps serving the
// channel as long as it lives.
//
//	serveInlet ──take──> pool (LIFO, at most maxIdle, each at most Options.WarmIdle)
//	     │                  ^
//	     └─ no warm channel: openChannel (cold) ──> after a clean end: put
//
// A warm channel stays subject to revocation and policy changes (it is
// tracked like a busy one), to the inlet's removal, and is checked for a
// close by the peer before it is used; its connection waits for the
// outlet's status before the app's first byte is read (openWarm), so a
// channel the outlet closed meanwhile costs the app nothing. It is kept
// Options.WarmIdle at most (DefaultWarmIdle, the longest allowed), never
// past its reuseUntil; the outlet waits for it a little longer (warmWait).
const (
	maxIdle = 8 // warm channels kept per inlet
	// DefaultWarmIdle is Options.WarmIdle's default and its most: a warm
	// channel unused this long is closed.
	DefaultWarmIdle = 30 * time.Second
)

// session is one channel of an inlet, busy or warm.
type session struct {
	ch   *channel.Conn
	peer *credential.Credential // the outlet's, as the handshake verified it
	// reuseUntil is when the channel stops carrying new connections: a
	// while before either end's credential expires, since the outlet
	// refuses a connection on a channel whose inlet credential expired.
	reuseUntil time.Time
	app        atomic.Pointer[net.TCPConn] // the connection it carries now
	first      *verdictPump                // a new channel, until its first connection runs
	untrack    func()                      // ends its tracking and its expiry watch
	hub        string                      // the hub it crosses, for a client of several ("": one)
	opened     time.Time
	expire     *time.Timer // while warm
	direct     bool        // on a direct path, not through the hub (direct.go)
	epoch      uint64      // the peer's turn to direct it was opened in (paths.go)
	in         *inlet
}

// reuseUntil is when a channel opened with own (the inlet's credential)
// to peer should carry no new connection: a tenth of the shorter
// credential lifetime (at most a minute) before the first expiry, to
// allow for clocks that differ.
func reuseUntil(own *tls.Certificate, peer *credential.Credential) time.Time {
	certs := []*x509.Certificate{peer.Cert}
	if own != nil && own.Leaf != nil {
		certs = append(certs, own.Leaf)
	}
	var until time.Time
	for _, c := range certs {
		margin := min(time.Minute, c.NotAfter.Sub(c.NotBefore)/10)
		if t := c.NotAfter.Add(-margin); until.IsZero() || t.Before(until) {
			until = t
		}
	}
	return until
}

// abort resets the channel and the connection it carries.
func (s *session) abort() {
	if a := s.app.Load(); a != nil {
		pipe.TCP(a).Abort()
	}
	s.ch.Abort()
}

// close ends the channel for good.
func (s *session) close() {
	s.untrack()
	s.ch.Close()
}

// pool holds an inlet's warm sessions.
type pool struct {
	ttl time.Duration // how long a session stays warm; < 0: none does

	mu     sync.Mutex // guards the following
	idle   []*session
	closed bool
}

// take returns a warm session that is still usable, or nil.
func (p *pool) take() *session {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			return nil
		}
		s := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if s.expire.Stop() && time.Now().Before(s.reuseUntil) && s.ch.Idle() {
			return s
		}
		s.close()
	}
}

// put keeps s warm, or closes it if the pool is full or closed, or s may
// carry no new connection. It stays warm for p.ttl at most, and not past
// its reuseUntil.
func (p *pool) put(s *session) {
	ttl := min(p.ttl, time.Until(s.reuseUntil)) // p.ttl < 0: warm channels off
	p.mu.Lock()
	if p.closed || len(p.idle) >= maxIdle || ttl <= 0 {
		p.mu.Unlock()
		s.close()
		return
	}
	p.idle = append(p.idle, s)
	s.expire = time.AfterFunc(ttl, func() { p.drop(s) })
	p.mu.Unlock()
}

// drop closes s if it is still warm.
func (p *pool) drop(s *session) {
	p.mu.Lock()
	for i, w := range p.idle {
		if w == s {
			p.idle = append(p.idle[:i], p.idle[i+1:]...)
			p.mu.Unlock()
			s.close()
			return
		}
	}
	p.mu.Unlock()
}

// len is the number of warm sessions.
func (p *pool) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// close closes every warm session and refuses new ones.
func (p *pool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, s := range idle {
		s.expire.Stop()
		s.close()
	}
}
