package portal

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/pipe"
	"github.com/sluicehq/sluice/agent/relay"
)

// Direct paths (docs/direct-paths.md). An inlet that may go direct to its
// peer holds a port P of the control link's address and dials with it;
// when the hub offers a direct path, the owner holds Q, connects Q → the
// inlet's public P at once and tells the hub Q, which tells the inlet; the
// inlet connects P → the owner's public Q (a TCP simultaneous open: no side
// listens). Roles stay: the inlet runs the TLS client, pinned to the owner
// the hub named, the outlet serveChannel. Any failure before the handshake
// is done, on either side, sends that side to the hub with its token, as
// if no direct path had been offered.
//
//	inlet: holdPort(P) ─> DialPort(P) ─> AwaitPunch ─> punchDial(P → Q) ─> TLS client
//	outlet: Incoming(P) ─> holdPort(Q) ─┬─ punchDial(Q → P) ─> TLS server
//	                                    └─ Punch(Q) ─> hub ─> inlet
//	either, on failure: OpenData(token) ─> TLS through the hub

// DirectHub is what direct paths need of the hub client (relay.Client).
// A Hub without it never goes direct.
type DirectHub interface {
	DialPort(ctx context.Context, relay string, port int) (relay.Dialed, error)
	AwaitPunch(ctx context.Context, token []byte) (netip.AddrPort, error)
	Punch(ctx context.Context, token []byte, port int) error
	PunchDone(token []byte)
	PunchLocal(token []byte) (netip.Addr, bool)
	ControlRTT() time.Duration
}

// minPunchTimeout is the least time a direct attempt gets: from the hub's
// answer to the dial until the connection is made; more on a control link
// with a long round trip (punchTimeout).
const minPunchTimeout = 100 * time.Millisecond

// directHandshakeTimeout bounds the TLS handshake on a direct connection,
// so that a fallback still finds the hub's pairing (its SessionTimeout).
const directHandshakeTimeout = 3 * time.Second

// directHub is the hub client if this manager takes direct paths.
func (m *Manager) directHub() DirectHub {
	if !m.opts.Direct || !directSupported {
		return nil
	}
	d, _ := m.opts.Hub.(DirectHub)
	return d
}

// punchTimeout is Options.PunchTimeout, or four control round trips and
// at least minPunchTimeout.
func (m *Manager) punchTimeout(d DirectHub) time.Duration {
	if m.opts.PunchTimeout > 0 {
		return m.opts.PunchTimeout
	}
	return max(minPunchTimeout, 4*d.ControlRTT())
}

// dialed is a dial's answer, with the port held for a direct path the hub
// offered (nil: none) and the end of the attempt's count (paths.try).
type dialed struct {
	relay.Dialed
	hold *portHold
	done func()
}

// dialFor asks the hub for a session for in, with a direct path if the
// manager takes them, in's last peer is not relayed after a failure (force:
// a background attempt, which asks all the same) and not too many attempts
// to it are under way.
func (m *Manager) dialFor(in *inlet, force bool) (dialed, error) {
	dh := m.directHub()
	var (
		hold *portHold
		done = func() {}
	)
	if dh != nil {
		if d, ok := m.paths.try(in.lastPeer(), force); ok {
			if ip, ok := dh.PunchLocal(nil); ok {
				var err error
				if hold, err = holdPort(ip); err != nil {
					m.log.Debug("no direct path: cannot hold a port", zap.Error(err))
				}
			}
			done = d
		}
	}
	port := 0
	if hold != nil {
		port = hold.port()
	}
	d, err := m.dialHub(in, port)
	if err != nil || hold != nil && !d.Punch {
		hold.close()
		hold = nil
	}
	if err != nil {
		done()
		return dialed{}, err
	}
	if port != 0 && !d.Punch {
		m.paths.counters.NotOffered.Add(1)
	}
	if hold == nil {
		done()
	}
	return dialed{Dialed: d, hold: hold, done: done}, nil
}

// punchInlet makes the inlet's side of a direct path: it waits for the
// hub's word on the owner's port and connects to it from the held port,
// within the punch timeout.
func (m *Manager) punchInlet(ctx context.Context, d dialed) (*net.TCPConn, error) {
	defer d.done()
	defer d.hold.close()
	dh := m.directHub()
	ctx, cancel := context.WithTimeout(ctx, m.punchTimeout(dh))
	defer cancel()
	at, err := dh.AwaitPunch(ctx, d.Token)
	if err != nil {
		return nil, fmt.Errorf("direct path: %w", err)
	}
	if f := m.punchTo.Load(); f != nil {
		at = (*f)(at)
	}
	raw, err := punchDial(ctx, d.hold, at)
	if err != nil {
		return nil, fmt.Errorf("direct path: %w", err)
	}
	if err := tuneDirect(raw); err != nil {
		raw.Close()
		return nil, err
	}
	return raw, nil
}

// punchOutlet makes the owner's side of a direct path for in: it holds a
// port, connects from it to the inlet at once, and tells the hub the port.
// nil: no direct path (the caller goes through the hub).
func (m *Manager) punchOutlet(ctx context.Context, in relay.Incoming, log *zap.Logger) *net.TCPConn {
	dh := m.directHub()
	if dh == nil {
		return nil
	}
	ip, ok := dh.PunchLocal(in.Token)
	if !ok {
		return nil
	}
	hold, err := holdPort(ip)
	if err != nil {
		log.Debug("no direct path: cannot hold a port", zap.Error(err))
		return nil
	}
	defer hold.close()
	ctx, cancel := context.WithTimeout(ctx, m.punchTimeout(dh))
	defer cancel()
	target := in.Punch
	if f := m.punchTo.Load(); f != nil {
		target = (*f)(target)
	}
	type result struct {
		c   *net.TCPConn
		err error
	}
	done := make(chan result, 1)
	if target.IsValid() {
		go func() {
			c, err := punchDial(ctx, hold, target)
			done <- result{c, err}
		}()
	} else {
		go func() { <-ctx.Done(); done <- result{err: fmt.Errorf("connect: %w", ctx.Err())} }()
	}
	if err := dh.Punch(ctx, in.Token, hold.port()); err != nil {
		cancel()
		if r := <-done; r.c != nil {
			r.c.Close()
		}
		log.Debug("direct path refused by the hub; through the hub", zap.Error(err))
		return nil
	}
	r := <-done
	if r.err != nil {
		log.Debug("direct path failed; through the hub", zap.Error(r.err))
		return nil
	}
	if err := tuneDirect(r.c); err != nil {
		r.c.Close()
		return nil
	}
	return r.c
}

// HandleSession serves one data session the hub announced for a relay
// this agent owns: straight to the inlet when the hub offered a direct
// path and it can be made, else through the hub (HandleIncoming).
func (m *Manager) HandleSession(in relay.Incoming) {
	m.handleIncoming(in)
}

// breakWatch is the channel side of a direct channel's pipe: when the pipe
// aborts, it notes whether the kernel had closed the connection under the
// channel (reset by the peer, or timed out: the path broke) before the
// abort resets it.
type breakWatch struct {
	pipe.Pump
	raw   *net.TCPConn
	broke *atomic.Bool
}

func (b breakWatch) Abort() error {
	if tcpClosed(b.raw) {
		b.broke.Store(true)
	}
	return b.Pump.Abort()
}

// join is a func that calls fs in order.
func join(fs ...func()) func() {
	return func() {
		for _, f := range fs {
			f()
		}
	}
}
