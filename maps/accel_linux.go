package maps

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/cilium/ebpf"

	"github.com/sluicehq/sluice/loader"
)

// ErrNotPairable means the app end of a connection cannot be named safely:
// the sockops program did not see it, or saw the same 4-tuple in two
// namespaces.
var ErrNotPairable = errors.New("app socket not known to socket acceleration")

// Sockets are the socket acceleration maps: socks (the sockhash), peers
// (agent socket -> app socket) and apps (connection -> the app's netns).
type Sockets struct{ socks, peers, apps *ebpf.Map }

// NewSockets wraps the loaded acceleration maps.
func NewSockets(m *loader.SockopsMaps) *Sockets {
	return &Sockets{socks: m.Socks, peers: m.Peers, apps: m.Apps}
}

func sockKey(netns uint64, local, remote netip.AddrPort) (loader.SockopsSockKey, error) {
	l, err := be32(local.Addr())
	if err != nil {
		return loader.SockopsSockKey{}, err
	}
	r, err := be32(remote.Addr())
	if err != nil {
		return loader.SockopsSockKey{}, err
	}
	return loader.SockopsSockKey{Netns: netns, LocalIp: l, RemoteIp: r, LocalPort: be16(local.Port()), RemotePort: be16(remote.Port())}, nil
}

// AppNetns returns the netns cookie the sockops program recorded for the
// app socket of the connection app -> svc, and forgets it.
func (s *Sockets) AppNetns(app, svc netip.AddrPort) (uint64, error) {
	k, err := flowKey(app, svc)
	if err != nil {
		return 0, fmt.Errorf("look up app socket: %w", err)
	}
	var cookie uint64
	err = s.apps.LookupAndDelete(k, &cookie)
	switch {
	case errors.Is(err, ebpf.ErrKeyNotExist):
		return 0, fmt.Errorf("app socket %v -> %v: %w", app, svc, ErrNotPairable)
	case err != nil:
		return 0, fmt.Errorf("look up app socket %v -> %v: %w", app, svc, err)
	case cookie == 0:
		return 0, fmt.Errorf("app socket %v -> %v: seen in two namespaces: %w", app, svc, ErrNotPairable)
	}
	return cookie, nil
}

// Pair makes the agent's writes on conn (the accepted end of app -> svc, in
// namespace agentNetns) go straight into the app's socket in namespace
// appNetns. Call it before the agent writes anything on conn.
func (s *Sockets) Pair(conn syscall.Conn, agentNetns, appNetns uint64, app, svc netip.AddrPort) error {
	agentKey, err := sockKey(agentNetns, svc, app)
	if err != nil {
		return fmt.Errorf("pair sockets: %w", err)
	}
	appKey, err := sockKey(appNetns, app, svc)
	if err != nil {
		return fmt.Errorf("pair sockets: %w", err)
	}
	var cookie uint64
	if err := s.socks.Lookup(appKey, &cookie); err != nil {
		return fmt.Errorf("pair sockets: app socket %v -> %v not in socks: %w", app, svc, ErrNotPairable)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("pair sockets: %w", err)
	}
	var uerr error
	if err := raw.Control(func(fd uintptr) { uerr = s.socks.Update(agentKey, uint64(fd), ebpf.UpdateAny) }); err != nil {
		return fmt.Errorf("pair sockets: %w", err)
	}
	if uerr != nil {
		return fmt.Errorf("pair sockets: add agent socket: %w", uerr)
	}
	if err := s.peers.Put(agentKey, appKey); err != nil {
		return fmt.Errorf("pair sockets: %w", err)
	}
	return nil
}

// Unpair forgets a pairing; the kernel drops closed sockets from socks by
// itself.
func (s *Sockets) Unpair(agentNetns uint64, app, svc netip.AddrPort) error {
	k, err := sockKey(agentNetns, svc, app)
	if err != nil {
		return fmt.Errorf("unpair sockets: %w", err)
	}
	if err := s.peers.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unpair sockets: %w", err)
	}
	return nil
}
