//go:build linux

package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/maps"
)

// accel pairs accepted transparent connections with their app sockets, so
// that the agent's writes go straight into the app's receive queue. A
// connection is paired only when the kernel's two accounts of the app agree:
// the namespace the sockops program saw the app socket in, and the one
// behind the veth the steer program saw its SYN come in on.
type accel struct {
	acc     *loader.Accel
	socks   *maps.Sockets
	agentNS uint64 // the agent's netns cookie
	log     *zap.Logger
	paired  atomic.Uint64

	mu     sync.Mutex        // guards behind
	behind map[uint32]uint64 // veth ifindex -> netns cookie of its container
}

// openAccel starts socket acceleration as mode asks; it returns nil (and
// why, for the status) when acceleration is off.
func openAccel(dp *loader.Datapath, ln *net.TCPListener, mode string, log *zap.Logger) (*accel, string, error) {
	if mode == DatapathOff {
		return nil, "off (--accelerate off)", dp.DisableAccel()
	}
	acc, err := dp.OpenAccel()
	if err == nil {
		var agentNS uint64
		raw, rerr := ln.SyscallConn()
		if rerr == nil {
			rerr = raw.Control(func(fd uintptr) { agentNS, err = loader.SocketNetnsCookie(fd) })
		}
		if err = errors.Join(rerr, err); err != nil {
			acc.Close()
		} else {
			return &accel{acc: acc, socks: maps.NewSockets(acc.Maps()), agentNS: agentNS, log: log, behind: map[uint32]uint64{}}, "on", nil
		}
	}
	if mode == DatapathOn {
		return nil, "", fmt.Errorf("start socket acceleration: %w", err)
	}
	log.Warn("socket acceleration unavailable: transparent inlets work without it", zap.Error(err))
	return nil, "off: " + err.Error(), nil
}

// pair pairs the accepted connection app -> svc, which the steer program
// saw come in on veth ifindex, if it can be done safely; else it makes sure
// no stale pairing of the same 4-tuple is left.
func (a *accel) pair(c *net.TCPConn, ifindex uint32, app, svc netip.AddrPort) {
	recorded, err := a.socks.AppNetns(app, svc)
	if err == nil {
		var behind uint64
		if behind, err = a.netnsBehind(ifindex); err == nil && behind != recorded {
			err = fmt.Errorf("app socket in netns %d, its veth leads to %d: %w", recorded, behind, maps.ErrNotPairable)
		}
	}
	if err == nil {
		err = a.socks.Pair(c, a.agentNS, recorded, app, svc)
	}
	if err != nil {
		a.log.Debug("connection not accelerated", zap.Stringer("client", app), zap.Error(err))
		if uerr := a.socks.Unpair(a.agentNS, app, svc); uerr != nil {
			a.log.Warn("clearing a stale socket pairing failed", zap.Error(uerr))
		}
		return
	}
	a.paired.Add(1)
}

// netnsBehind returns the netns cookie behind a veth, from the cache.
func (a *accel) netnsBehind(ifindex uint32) (uint64, error) {
	a.mu.Lock()
	c, ok := a.behind[ifindex]
	a.mu.Unlock()
	if ok {
		return c, nil
	}
	c, err := loader.NetnsCookieBehind(int(ifindex))
	if err != nil {
		return 0, err
	}
	a.mu.Lock()
	a.behind[ifindex] = c
	a.mu.Unlock()
	return c, nil
}

// forget drops a device's cached namespace (the device went away; its
// index may come back for another container).
func (a *accel) forget(ifindex int) {
	a.mu.Lock()
	delete(a.behind, uint32(ifindex))
	a.mu.Unlock()
}

func (a *accel) Close() error { return a.acc.Close() }
