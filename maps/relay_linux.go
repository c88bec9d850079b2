package maps

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/loader"
)

// Relay is the hub's sockmap relay (bpf/relay.c): relay_peers, a receiving
// socket's cookie -> the socket its bytes leave through, and each
// direction's accounts, the program's (relay_flows) and the hub's
// (relay_hubs).
type Relay struct{ peers, flows, hubs *ebpf.Map }

// NewRelay wraps the loaded relay maps; they stay owned by the loader.
func NewRelay(m *loader.RelayMaps) *Relay {
	return &Relay{peers: m.RelayPeers, flows: m.RelayFlows, hubs: m.RelayHubs}
}

// Pairing is two connections joined by Pair.
type Pairing struct {
	// AToB is what a receives, sent out through b; BToA the reverse.
	AToB, BToA *Direction
}

// Direction is one direction of a pairing, named by its receiving socket.
// Its methods other than Flow are for one goroutine at a time.
type Direction struct {
	r         *Relay
	key       uint64              // the receiving socket's cookie
	hub       loader.RelayPairHub // what the hub last told the program
	drainedAt uint64              // Redirected when the queue was last seen empty
}

// RelayFlow says what the program did with the bytes of a direction.
type RelayFlow struct {
	Redirected uint64 // sent out through the peer socket by the kernel
	Passed     uint64 // left to the hub: the peer's queue was full, or the peer gone
	Held       bool   // bytes go to the hub until it has relayed all it was passed
}

// Pair joins two established connections: what either receives, the kernel
// sends out through the other, once the hub has written its first bytes on
// the other (its ack) and said so (Wrote); until then the program passes
// them up. Pair them before either peer sends: bytes already queued in a
// socket when it joins stay for its owner to read, and later bytes,
// redirected, could overtake them. A paired socket loses splice(2), also
// after Unpair.
func (r *Relay) Pair(a, b *net.TCPConn) (*Pairing, error) {
	if a == nil || b == nil || a == b {
		return nil, fmt.Errorf("pair sockets: need two distinct connections: %w", ErrInvalid)
	}
	ka, err := cookie(a)
	if err != nil {
		return nil, fmt.Errorf("pair sockets: %w", err)
	}
	kb, err := cookie(b)
	if err != nil {
		return nil, fmt.Errorf("pair sockets: %w", err)
	}
	p := &Pairing{AToB: &Direction{r: r, key: ka}, BToA: &Direction{r: r, key: kb}}
	if err := p.join(a, b); err != nil {
		return nil, errors.Join(fmt.Errorf("pair sockets: %w", err), p.Unpair())
	}
	return p, nil
}

func (p *Pairing) join(a, b *net.TCPConn) error {
	for _, d := range []*Direction{p.AToB, p.BToA} {
		if err := d.r.flows.Update(d.key, loader.RelayPairFlow{}, ebpf.UpdateNoExist); err != nil {
			return err
		}
		if err := d.r.hubs.Update(d.key, d.hub, ebpf.UpdateNoExist); err != nil {
			return err
		}
	}
	// Each socket joins under its peer's cookie: what the peer receives
	// leaves through it.
	if err := put(p.AToB.r.peers, p.AToB.key, b); err != nil {
		return err
	}
	return put(p.BToA.r.peers, p.BToA.key, a)
}

// put adds c to the sockhash m under key.
func put(m *ebpf.Map, key uint64, c *net.TCPConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var uerr error
	if err := raw.Control(func(fd uintptr) { uerr = m.Update(key, uint64(fd), ebpf.UpdateNoExist) }); err != nil {
		return err
	}
	return uerr
}

// Unpair takes the pairing apart: the sockets leave the sockhash (a closed
// socket has left by itself) and the accounts are deleted.
func (p *Pairing) Unpair() error {
	var errs []error
	for _, d := range []*Direction{p.AToB, p.BToA} {
		for _, m := range []*ebpf.Map{d.r.peers, d.r.flows, d.r.hubs} {
			if err := m.Delete(d.key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("unpair sockets: %w", err)
	}
	return nil
}

// Flow reads the program's account of the direction.
func (d *Direction) Flow() (RelayFlow, error) {
	var f loader.RelayPairFlow
	if err := d.r.flows.Lookup(d.key, &f); err != nil {
		return RelayFlow{}, fmt.Errorf("read relay flow: %w", err)
	}
	return RelayFlow{Redirected: f.Redirected, Passed: f.Passed, Held: f.Held != 0}, nil
}

// Wrote tells the program that the hub has written n bytes of its own on
// the peer socket (its ack); the program redirects nothing before.
func (d *Direction) Wrote(n uint64) error {
	return d.record(loader.RelayPairHub{Sent: d.hub.Sent + n, Relayed: d.hub.Relayed})
}

// Relayed tells the program that the hub has written n more of the bytes
// it passed on the peer socket. Once the hub has relayed all of them, the
// program redirects again.
func (d *Direction) Relayed(n uint64) error {
	return d.record(loader.RelayPairHub{Sent: d.hub.Sent + n, Relayed: d.hub.Relayed + n})
}

func (d *Direction) record(h loader.RelayPairHub) error {
	if err := d.r.hubs.Update(d.key, h, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("record what the hub wrote: %w", err)
	}
	d.hub = h
	return nil
}

// Drained reports whether every byte of the direction the kernel
// redirected so far has left its queue for peer (the socket the bytes
// leave through) for peer's TCP. The hub waits for it before it writes on
// peer itself (bytes passed to it, or a FIN), so that nothing overtakes a
// redirected byte: redirects reach peer later, from a kernel worker.
func (d *Direction) Drained(peer *net.TCPConn) (bool, error) {
	f, err := d.Flow()
	if err != nil {
		return false, err
	}
	if f.Redirected == d.drainedAt {
		return true, nil // nothing redirected since the queue was empty
	}
	taken, err := queued(peer)
	if err != nil {
		return false, fmt.Errorf("read relay backlog: %w", err)
	}
	if taken < d.hub.Sent+f.Redirected {
		return false, nil
	}
	d.drainedAt = f.Redirected
	return true, nil
}

// queued returns how many bytes c's TCP has taken to send since it was
// accepted: those its peer acknowledged, then those still in its send
// queue. Read in that order, an acknowledgment in between can only make
// the sum smaller, never reach a total not yet queued.
func queued(c *net.TCPConn) (uint64, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		info *unix.TCPInfo
		outq int
		gerr error
	)
	if err := raw.Control(func(fd uintptr) {
		if info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); gerr == nil {
			outq, gerr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
		}
	}); err != nil {
		return 0, err
	}
	if gerr != nil {
		return 0, gerr
	}
	return info.Bytes_acked + uint64(outq), nil
}

// cookie returns a socket's cookie (SO_COOKIE), the key its direction has
// in the maps and what bpf_get_socket_cookie gives the program.
func cookie(c *net.TCPConn) (uint64, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		v    uint64
		gerr error
	)
	if err := raw.Control(func(fd uintptr) { v, gerr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_COOKIE) }); err != nil {
		return 0, err
	}
	if gerr != nil {
		return 0, fmt.Errorf("read socket cookie: %w", gerr)
	}
	return v, nil
}
