package hub

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/sluicehq/sluice/agent/relay"
	"github.com/sluicehq/sluice/agent/wire"
)

// Direct paths, the hub's side (docs/direct-paths.md). The hub sees each
// agent's public address as the remote address of its control connection;
// the agent says which local address it bound (opPresent's Local). When the
// ports match, the agent's NAT keeps ports (or there is none), and a port
// it binds next is reachable at the same public port: the hub may offer it
// direct paths, if it asked for them (opPresent's Direct). A dial with a
// port from such an inlet to such an owner is announced to the owner with
// the inlet's public address and port; the owner's opPunch (its own port)
// is passed to the inlet (opPunchAt). The pairing is made as for any
// session, with the same tokens: they are the fallback of either side. The
// inlet's opDirect says the session went direct: its pairing is forgotten.
// The hub learns two public addresses and ports and carries no byte.

// punch is a session's direct-path offer.
type punch struct {
	inlet   *session // the dialing session: where opPunchAt goes
	port    uint16   // the inlet's port
	punched bool     // the owner's opPunch was passed on (once)
}

// observe records, at a session's opPresent, whether the hub may offer it
// direct paths.
func (s *session) observe(m *relay.Message) {
	if m.Local == "" {
		return // a renewal: what the first presentation said stands
	}
	local, err := netip.ParseAddrPort(m.Local)
	s.direct.Store(err == nil && m.Direct && s.public.IsValid() && local.Port() == s.public.Port())
}

// offer reports whether a dial of s with port to owner gets a direct path,
// after checking the port.
func offer(s, owner *session, port int) bool {
	return port != 0 && s.direct.Load() && owner.direct.Load()
}

// checkPort refuses a dial's port outside 0..65535.
func checkPort(port int) error {
	if port < 0 || port > 65535 {
		return fmt.Errorf("port %d is not a TCP port: %w", port, wire.ErrMalformed)
	}
	return nil
}

// punchFor passes the owner's opPunch on to the inlet of its session: only
// for a session announced to o with a direct path, once, with o's own token.
func (h *Hub) punchFor(o *session, m *relay.Message, reply *relay.Message) *relay.Message {
	if m.Port <= 0 || m.Port > 65535 {
		return refuse(reply, fmt.Errorf("punch: port %d is not a TCP port: %w", m.Port, wire.ErrMalformed))
	}
	var tok [relay.TokenSize]byte
	copy(tok[:], m.Token)
	h.mu.Lock()
	p := h.pending[tok]
	ok := p != nil && len(m.Token) == relay.TokenSize && tok == p.outletTok && p.punch != nil &&
		p.owner.Load() == o && !p.punch.punched
	var inlet *session
	if ok {
		p.punch.punched = true
		inlet = p.punch.inlet
	}
	h.mu.Unlock()
	if !ok {
		return refuse(reply, fmt.Errorf("punch: no session with a direct path announced to this node under that token: %w", wire.ErrRefused))
	}
	at := netip.AddrPortFrom(o.public.Addr(), uint16(m.Port))
	inlet.push(&relay.Message{Op: relay.OpPunchAt, Token: p.inletTok[:], Addr: at.String()})
	h.punches.Add(1)
	return reply
}

// wentDirect forgets the pairing of a session whose inlet s says it went
// direct: only its own session's, by its own token.
func (h *Hub) wentDirect(s *session, m *relay.Message, reply *relay.Message) *relay.Message {
	var tok [relay.TokenSize]byte
	copy(tok[:], m.Token)
	h.mu.Lock()
	p := h.pending[tok]
	ok := p != nil && len(m.Token) == relay.TokenSize && tok == p.inletTok && p.punch != nil && p.punch.inlet == s
	if ok {
		h.forgetLocked(p)
	}
	h.mu.Unlock()
	if !ok {
		return refuse(reply, fmt.Errorf("direct: no session of this node with a direct path under that token: %w", wire.ErrRefused))
	}
	p.fail() // a side that came to the hub all the same reads the end
	h.direct.Add(1)
	return reply
}

// remoteAddrPort is c's remote address, unmapped.
func remoteAddrPort(c interface{ RemoteAddr() net.Addr }) netip.AddrPort {
	a, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := a.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
