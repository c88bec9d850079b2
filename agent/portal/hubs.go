package portal

import (
	"sync"
	"time"

	"github.com/sluicehq/sluice/agent/relay"
)

// Hubs going away. A warm channel crosses the hub that paired it; when that
// hub says it is going away (relay.ClientOptions.OnGoingAway), the channels
// it relays are used for no new connection: the idle ones are closed at
// once, the busy ones when their connection ends, so that the hub's drain
// ends with them and no new connection is lost to the reset at its end.
// New channels go through the hub the client has moved to.

// hubsGone records when each hub said it was going away.
type hubsGone struct {
	mu    sync.Mutex // guards since
	since map[string]time.Time
}

// mark records that hub is going away now.
func (g *hubsGone) mark(hub string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.since == nil {
		g.since = map[string]time.Time{}
	}
	g.since[hub] = time.Now()
}

// crosses reports whether s was opened through a hub that said it was
// going away since.
func (g *hubsGone) crosses(s *session) bool {
	if s.hub == "" {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	t, ok := g.since[s.hub]
	return ok && !t.Before(s.opened)
}

// HubGoingAway tells the inlets that the hub at addr is going away: their
// warm channels through it are closed, and the busy ones are not kept warm
// once their connection ends.
func (m *Manager) HubGoingAway(addr string) {
	m.gone.mark(addr)
	m.mu.Lock()
	inlets := make([]*inlet, 0, len(m.inlets))
	for _, in := range m.inlets {
		inlets = append(inlets, in)
	}
	m.mu.Unlock()
	for _, in := range inlets {
		in.pool.dropIf(m.gone.crosses)
	}
}

// hubOf is the hub a data session token leads to ("" for one hub).
func hubOf(token []byte) string { return relay.TokenHub(token) }

// dropIf closes the warm sessions for which gone holds.
func (p *pool) dropIf(gone func(*session) bool) {
	p.mu.Lock()
	var drop []*session
	keep := p.idle[:0]
	for _, s := range p.idle {
		if gone(s) {
			drop = append(drop, s)
		} else {
			keep = append(keep, s)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	p.mu.Unlock()
	for _, s := range drop {
		s.expire.Stop()
		s.close()
	}
}
