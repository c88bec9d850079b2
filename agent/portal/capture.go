package portal

import (
	"net"

	"github.com/sluicehq/sluice/agent/capture"
	"github.com/sluicehq/sluice/agent/channel"
)

// Taps for `agentctl capture` (package capture, Options.Taps). Each side
// captures what it sees itself:
//
//	decrypted, inlet:  the app's address ──> the address it connected to
//	                   (the inlet's listener, or the service's own address
//	                   for a transparent inlet)
//	decrypted, outlet: the outlet's socket ──> the target it dialed
//	wire:              the agent's data connection to the hub (or, direct,
//	                   between the two agents), with its real addresses

// tapWire taps ch's TCP connection; dialed says whether this agent opened
// it.
func (m *Manager) tapWire(ch *channel.Conn, portal, peer string, dialed bool) {
	raw := ch.Raw()
	local, remote := addrPort(raw.LocalAddr()), addrPort(raw.RemoteAddr())
	var p *capture.Point
	if dialed {
		p = m.opts.Taps.NewPoint(capture.Wire, portal, peer, local, remote, true)
	} else {
		p = m.opts.Taps.NewPoint(capture.Wire, portal, peer, remote, local, false)
	}
	p.Open()
	ch.SetWireTap(p)
}

// tapStream taps the plaintext of the connection c that ch is about to
// carry, and returns the function that ends the tap with the pipe's error.
// sendIsClient says whether what ch sends comes from c's client side (the
// inlet: c is the app's connection) or not (the outlet: c goes to the
// target).
func (m *Manager) tapStream(ch *channel.Conn, c *net.TCPConn, portal, peer string, inlet bool) func(error) {
	var p *capture.Point
	if inlet {
		p = m.opts.Taps.NewPoint(capture.Decrypted, portal, peer, addrPort(c.RemoteAddr()), addrPort(c.LocalAddr()), true)
	} else {
		p = m.opts.Taps.NewPoint(capture.Decrypted, portal, peer, addrPort(c.LocalAddr()), addrPort(c.RemoteAddr()), false)
	}
	if p == nil {
		return func(error) {}
	}
	p.Open()
	ch.SetStreamTap(p)
	return func(err error) {
		ch.SetStreamTap(nil)
		p.End(err != nil)
	}
}
