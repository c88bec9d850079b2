package portal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The sockets of a direct path (direct.go). A port is held by a bound,
// never listening socket (SO_REUSEADDR), so that the connect attempts from
// it, each a new socket bound to the same port, may share it: Linux lets
// sockets that all set SO_REUSEADDR bind one port as long as none listens.

// portHold keeps a local port bound while a direct path is tried.
type portHold struct {
	fd   int
	addr netip.AddrPort
}

// holdPort binds an ephemeral port of ip.
func holdPort(ip netip.Addr) (*portHold, error) {
	family := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Addr: ip.As4()}
	if ip.Is6() {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Addr: ip.As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("hold a port: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("hold a port: %w", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("hold a port of %s: %w", ip, err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("hold a port: %w", err)
	}
	var port int
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		port = a.Port
	case *unix.SockaddrInet6:
		port = a.Port
	}
	return &portHold{fd: fd, addr: netip.AddrPortFrom(ip, uint16(port))}, nil
}

func (h *portHold) port() int { return int(h.addr.Port()) }

func (h *portHold) close() {
	if h != nil && h.fd >= 0 {
		unix.Close(h.fd)
		h.fd = -1
	}
}

func reuseAddr(_, _ string, raw syscall.RawConn) error {
	var serr error
	err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	})
	return errors.Join(err, serr)
}

// punchDial connects from the held port to peer until it works or ctx is
// done. A refusal (the peer's kernel answered with a reset: no firewall in
// front of it, and its own SYN is not out yet) is tried again at once.
func punchDial(ctx context.Context, h *portHold, peer netip.AddrPort) (*net.TCPConn, error) {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(h.addr), Control: reuseAddr}
	tries := 0
	for {
		tries++
		c, err := d.DialContext(ctx, "tcp", peer.String())
		if err == nil {
			return c.(*net.TCPConn), nil
		}
		if ctx.Err() != nil || !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("connect %s → %s (%d tries): %w", h.addr, peer, tries, err)
		}
	}
}

// Break detection on a direct path (docs/direct-paths.md): unacknowledged
// data fails the connection after directUserTimeout, and an idle one is
// probed after directKeepIdle every directKeepInterval, directKeepCount
// times. Through the hub the hub's own connections watch the path.
const (
	directUserTimeout  = 5 * time.Second
	directKeepIdle     = 5 * time.Second
	directKeepInterval = time.Second
	directKeepCount    = 3
)

// tuneDirect sets break detection on a direct path's connection.
func tuneDirect(c *net.TCPConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		f := int(fd)
		serr = errors.Join(
			unix.SetsockoptInt(f, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(directUserTimeout/time.Millisecond)),
			unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1),
			unix.SetsockoptInt(f, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(directKeepIdle/time.Second)),
			unix.SetsockoptInt(f, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(directKeepInterval/time.Second)),
			unix.SetsockoptInt(f, unix.IPPROTO_TCP, unix.TCP_KEEPCNT, directKeepCount))
	})
	if err := errors.Join(err, serr); err != nil {
		return fmt.Errorf("set break detection on a direct path: %w", err)
	}
	return nil
}

// tcpClosed reports whether the kernel closed c: reset by the peer or
// timed out (TCP_USER_TIMEOUT, keepalive), not closed by this process.
func tcpClosed(c *net.TCPConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var info *unix.TCPInfo
	if raw.Control(func(fd uintptr) { info, _ = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }) != nil || info == nil {
		return false
	}
	return info.State == tcpStateClose
}

// tcpStateClose is TCP_CLOSE of include/net/tcp_states.h.
const tcpStateClose = 7

// directSupported reports whether this system can take direct paths.
const directSupported = true
