package portal

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"slices"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/pipe"
)

// The registry: the Manager's inlets are the agent's one record of the
// inlets that run. An inlet the BPF data path knows (transparent, or
// explicit with --allow-local) also has a portal number there, which the
// agent's data path controller picks (SetPortal) and reads back (Portals)
// to write the kernel's maps. The agent's saved configuration says what
// the operator asked for; the registry says what runs now.

// NumberedInlet is a running inlet with a portal number in the data path.
type NumberedInlet struct {
	Spec   InletSpec
	Number uint32
	// Peer is the node that owned the inlet's relay at its last channel
	// ("" before the first), as InletPeer.
	Peer string
}

// SetPortal gives a running inlet its portal number in the data path.
func (m *Manager) SetPortal(inlet string, number uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	in := m.inlets[inlet]
	if in == nil {
		return fmt.Errorf("set portal number of inlet %q: %w", inlet, ErrNotFound)
	}
	in.number = number
	return nil
}

// Portals lists the running inlets that have a portal number, in the
// order they were added.
func (m *Manager) Portals() []NumberedInlet {
	m.mu.Lock()
	ins := make([]*inlet, 0, len(m.inlets))
	for _, in := range m.inlets {
		if in.number != 0 {
			ins = append(ins, in)
		}
	}
	out := make([]NumberedInlet, 0, len(ins))
	slices.SortFunc(ins, func(a, b *inlet) int { return cmp.Compare(a.seq, b.seq) })
	for _, in := range ins {
		out = append(out, NumberedInlet{Spec: in.spec, Number: in.number})
	}
	m.mu.Unlock()
	for i, in := range ins {
		if p := in.peer.Load(); p != nil {
			out[i].Peer = *p
		}
	}
	return out
}

// AcceptTransparent accepts connections on ln, the agent's transparent
// listener (the data path steers the applications' connections to
// transparent inlets into it), until ln is closed. admit decides, for each
// connection, which workload it comes from and whether the data path's
// policy still permits it: if so it calls serve with the workload (the
// connection's local address, the service the application dialed, picks
// the inlet, as in ServeTransparent); if not it returns why, and the
// connection is reset. The caller owns ln and waits for AcceptTransparent
// to return after closing it.
func (m *Manager) AcceptTransparent(ln *net.TCPListener, admit func(c *net.TCPConn, serve func(workload uint32)) error) {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				m.log.Error("transparent listener stopped accepting", zap.Error(err))
			}
			return
		}
		err = admit(c, func(workload uint32) { m.ServeTransparent(c, workload) })
		if err != nil {
			m.transparentRefused(c, err)
			m.log.Debug("transparent connection refused", zap.Stringer("client", c.RemoteAddr()), zap.Error(err))
			pipe.TCP(c).Abort()
		}
	}
}

// AcceptDirect accepts channels that inlets open straight to this agent
// (agent run --direct-listen) on ln until ln is closed, and serves each
// as ServeDirect. The caller owns ln and waits for AcceptDirect to return
// after closing it.
func (m *Manager) AcceptDirect(ln *net.TCPListener) {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				m.log.Error("direct listener stopped", zap.Error(err))
			}
			return
		}
		go m.ServeDirect(c)
	}
}
