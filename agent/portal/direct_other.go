//go:build !linux

package portal

import (
	"context"
	"errors"
	"net"
	"net/netip"
)

// Direct paths need Linux's socket options: elsewhere every channel goes
// through the hub.

var errNoDirect = errors.New("direct paths need Linux")

type portHold struct{ addr netip.AddrPort }

func holdPort(netip.Addr) (*portHold, error) { return nil, errNoDirect }
func (h *portHold) port() int                { return 0 }
func (h *portHold) close()                   {}

func punchDial(context.Context, *portHold, netip.AddrPort) (*net.TCPConn, error) {
	return nil, errNoDirect
}

func tuneDirect(*net.TCPConn) error { return errNoDirect }
func tcpClosed(*net.TCPConn) bool   { return false }
func tcpUnacked(*net.TCPConn) bool  { return false }

const directSupported = false
