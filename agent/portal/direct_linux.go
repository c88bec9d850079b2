package portal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
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

// punchDial connects from the held port to peer until it works or ctx is
// done. A refusal (the peer's kernel answered with a reset: nothing drops
// SYNs in front of it, and its own SYN is not out yet) is tried again at
// once. Such a path works only when the two sides' connects overlap in
// time; on loopback each SYN is answered inside the connect call that sent
// it, so the tries run on a thread of their own, in blocking connect calls
// (bounded by SO_SNDTIMEO), not parked and woken by the Go scheduler,
// whose two sides could then take turns on one CPU and never overlap.
func punchDial(ctx context.Context, h *portHold, peer netip.AddrPort) (*net.TCPConn, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(minPunchTimeout)
	}
	type result struct {
		c   *net.TCPConn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		c, err := punchLoop(ctx, h.addr, peer, deadline)
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-ctx.Done():
		go func() { // the loop ends by its deadline
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, fmt.Errorf("connect %s → %s: %w", h.addr, peer, ctx.Err())
	}
}

func sockaddr(ap netip.AddrPort) (int, unix.Sockaddr) {
	if ap.Addr().Is4() {
		return unix.AF_INET, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return unix.AF_INET6, &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

// punchLoop tries blocking connects from local to peer until one works,
// one fails otherwise than refused, or deadline.
func punchLoop(ctx context.Context, local, peer netip.AddrPort, deadline time.Time) (*net.TCPConn, error) {
	family, from := sockaddr(local)
	_, to := sockaddr(peer)
	var last error
	for tries := 1; ; tries++ {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			return nil, fmt.Errorf("connect %s → %s (%d tries, last %v): %w", local, peer, tries-1, last, context.DeadlineExceeded)
		}
		c, err := connectOnce(family, from, to, left)
		switch {
		case err == nil:
			return c, nil
		case errors.Is(err, unix.ECONNREFUSED), errors.Is(err, unix.EADDRINUSE), errors.Is(err, unix.EADDRNOTAVAIL), errors.Is(err, unix.EINTR):
			last = err
		default:
			return nil, fmt.Errorf("connect %s → %s (%d tries): %w", local, peer, tries, err)
		}
	}
}

// connectOnce makes one blocking connect from a socket bound to from, for
// at most left.
func connectOnce(family int, from, to unix.Sockaddr, left time.Duration) (*net.TCPConn, error) {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	tv := unix.NsecToTimeval(max(left, time.Millisecond).Nanoseconds())
	if err := errors.Join(
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1),
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv),
		unix.Bind(fd, from)); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Connect(fd, to); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EINPROGRESS) || errors.Is(err, unix.EAGAIN) {
			err = fmt.Errorf("connect: %w", os.ErrDeadlineExceeded) // SO_SNDTIMEO ran out
		}
		return nil, err
	}
	// net.FileConn takes a duplicate, in non-blocking mode, to the poller.
	f := os.NewFile(uintptr(fd), "direct")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
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
	info := tcpInfo(c)
	return info != nil && info.State == tcpStateClose
}

// tcpUnacked reports whether c has sent data its peer's kernel has not
// acknowledged yet (TCP_INFO's unacked segments).
func tcpUnacked(c *net.TCPConn) bool {
	info := tcpInfo(c)
	return info != nil && info.Unacked > 0
}

// tcpInfo is c's TCP_INFO, nil if it cannot be read.
func tcpInfo(c *net.TCPConn) *unix.TCPInfo {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	var info *unix.TCPInfo
	if raw.Control(func(fd uintptr) { info, _ = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }) != nil {
		return nil
	}
	return info
}

// tcpStateClose is TCP_CLOSE of include/net/tcp_states.h.
const tcpStateClose = 7

// directSupported reports whether this system can take direct paths.
const directSupported = true
