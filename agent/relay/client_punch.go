package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Direct paths, the client's side (docs/direct-paths.md). The inlet binds
// a port P of the control link's local address and dials with it
// (DialPort); the hub, if both agents keep their ports, announces the
// session to the owner with the inlet's public address and P (Incoming's
// Punch) and answers the inlet "punch offered". The owner binds Q,
// connects Q → inlet at once and tells the hub Q (Punch); the hub tells
// the inlet where (OpPunchAt, AwaitPunch), and the inlet connects P → the
// owner's public address and Q. Whoever's SYN leaves last finds the other
// side's NAT entry: a TCP simultaneous open. An inlet whose channel went
// direct tells the hub (PunchDone) so that it forgets the fallback pairing.
// Only the control link takes part: sessions announced on links to other
// hubs never are offered one (those links do not announce direct paths).

// maxPunchWaits bounds the OpPunchAt words kept for tokens nobody awaits
// yet (a hub's word may overtake its reply to the dial).
const maxPunchWaits = 4096

// punchWaits are the OpPunchAt words by token.
type punchWaits struct {
	mu sync.Mutex // guards m
	m  map[string]chan netip.AddrPort
}

// ch returns the channel of tok, made if need be; nil past the bound.
func (w *punchWaits) ch(tok string) chan netip.AddrPort {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[string]chan netip.AddrPort{}
	}
	ch := w.m[tok]
	if ch == nil {
		if len(w.m) >= maxPunchWaits {
			return nil
		}
		ch = make(chan netip.AddrPort, 1)
		w.m[tok] = ch
	}
	return ch
}

func (w *punchWaits) forget(tok string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m, tok)
}

// punchAddr parses a punch address of the hub's: a valid IP and a port
// not 0, else the zero AddrPort (no punch).
func punchAddr(s string) netip.AddrPort {
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 || !ap.Addr().IsValid() {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// punchAt takes the hub's word on where the owner of a session waits.
func (c *Client) punchAt(m *Message, hub string) {
	ap := punchAddr(m.Addr)
	if len(m.Token) != TokenSize || !ap.IsValid() {
		c.log.Warn("dropped a malformed punch word", zap.String("hub", hub), zap.Int("token_bytes", len(m.Token)), zap.String("addr", m.Addr))
		return
	}
	if ch := c.punches.ch(string(m.Token)); ch != nil {
		select {
		case ch <- ap:
		default:
		}
	}
}

// ErrNoPunch means the hub did not say in time where the owner waits.
var ErrNoPunch = errors.New("no word from the hub on the direct path")

// AwaitPunch waits, until ctx is done, for the hub's word on where the
// owner of the session of token (from DialPort, with Punch) connects from.
func (c *Client) AwaitPunch(ctx context.Context, token []byte) (netip.AddrPort, error) {
	tok := string(token[:TokenSize])
	defer c.punches.forget(tok)
	ch := c.punches.ch(tok)
	if ch == nil {
		return netip.AddrPort{}, fmt.Errorf("await punch: too many waiting: %w", ErrNoPunch)
	}
	select {
	case ap := <-ch:
		return ap, nil
	case <-ctx.Done():
		return netip.AddrPort{}, fmt.Errorf("await punch: %w: %w", ctx.Err(), ErrNoPunch)
	}
}

// Punch tells the hub that the owner connects from port for the session
// of token (from Incoming); the hub passes it on to the inlet.
func (c *Client) Punch(ctx context.Context, token []byte, port int) error {
	if _, err := c.request(ctx, &Message{Op: OpPunch, Token: token[:TokenSize], Port: port}); err != nil {
		return wrap(err, "punch")
	}
	return nil
}

// PunchDone tells the hub, without waiting, that the session of token went
// direct: it forgets the session's pairing.
func (c *Client) PunchDone(token []byte) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := c.request(ctx, &Message{Op: OpDirect, Token: token[:TokenSize]}); err != nil {
			c.log.Debug("telling the hub a session went direct failed", zap.Error(err))
		}
	}()
}

// PunchLocal is the local address of the control link, if the session of
// token was issued on it: where an agent binds the port of a direct path,
// so that it leaves through the NAT mapping the hub saw. ok is false for a
// session of another hub's, or when the link is down.
func (c *Client) PunchLocal(token []byte) (ip netip.Addr, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return netip.Addr{}, false
	}
	if h := TokenHub(token); h != "" && h != c.addr {
		return netip.Addr{}, false
	}
	a, isTCP := c.conn.LocalAddr().(*net.TCPAddr)
	if !isTCP {
		return netip.Addr{}, false
	}
	return a.AddrPort().Addr().Unmap(), true
}

// ControlRTT is the smoothed round trip time of the control link as the
// kernel measures it (TCP_INFO), 0 if unknown.
func (c *Client) ControlRTT() time.Duration {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return 0
	}
	tc, ok := conn.NetConn().(*net.TCPConn)
	if !ok {
		return 0
	}
	return TCPRTT(tc)
}
