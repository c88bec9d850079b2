package maps

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/loader"
)

// ErrRelayClosed is what NextOverflow returns once the Relay is closed.
var ErrRelayClosed = errors.New("sockmap relay closed")

// Relay is the hub's sockmap relay (bpf/relay.c): relay_peers, a receiving
// socket's cookie -> the socket its bytes leave through; each direction's
// accounts, the program's (relay_flows) and the hub's (relay_hubs); and the
// program's overflow reports (relay_overflows).
type Relay struct {
	peers, flows, hubs *ebpf.Map
	overflows          *ringbuf.Reader
}

// NewRelay wraps the loaded relay maps; they stay owned by the loader.
// Close releases the reader of overflow reports.
func NewRelay(m *loader.RelayMaps) (*Relay, error) {
	rd, err := ringbuf.NewReader(m.RelayOverflows)
	if err != nil {
		return nil, fmt.Errorf("read relay overflows: %w", err)
	}
	return &Relay{peers: m.RelayPeers, flows: m.RelayFlows, hubs: m.RelayHubs, overflows: rd}, nil
}

// Close ends NextOverflow.
func (r *Relay) Close() error { return r.overflows.Close() }

// NextOverflow waits until the program reports a direction whose peer's
// backlog passed its bound, and returns its Cookie. Each direction is
// reported once.
func (r *Relay) NextOverflow() (uint64, error) {
	rec, err := r.overflows.Read()
	if errors.Is(err, ringbuf.ErrClosed) {
		return 0, ErrRelayClosed
	}
	if err != nil {
		return 0, fmt.Errorf("read relay overflows: %w", err)
	}
	if len(rec.RawSample) < 8 {
		return 0, fmt.Errorf("read relay overflows: a %d-byte report", len(rec.RawSample))
	}
	return binary.NativeEndian.Uint64(rec.RawSample), nil
}

// Pairing is two connections joined by Pair.
type Pairing struct {
	// AToB is what a receives, sent out through b; BToA the reverse.
	AToB, BToA *Direction
}

// Direction is one direction of a pairing, named by its receiving socket.
// Its methods other than Flow and Cookie are for one goroutine at a time.
type Direction struct {
	r         *Relay
	key       uint64              // the receiving socket's cookie
	hub       loader.RelayPairHub // what the hub last told the program
	drainedAt uint64              // Redirected when the queue was last seen empty
}

// RelayFlow says what the program did with the bytes of a direction.
type RelayFlow struct {
	Redirected uint64 // sent out through the peer socket by the kernel
	Passed     uint64 // left to the hub: the peer was gone
	Overflow   bool   // reported: the peer's backlog passed its bound
}

// Pair joins two established connections: what either receives, the kernel
// sends out through the other. head is how many bytes the hub writes on
// each itself, just after (its ack). Bytes already queued in a socket are
// taken too, first: Pair runs the program on them at once. A socket that
// has received a FIN cannot join (the kernel refuses it). A paired socket
// loses splice(2), also after Unpair.
func (r *Relay) Pair(a, b *net.TCPConn, head uint64) (*Pairing, error) {
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
	hub := loader.RelayPairHub{Sent: head}
	p := &Pairing{AToB: &Direction{r: r, key: ka, hub: hub}, BToA: &Direction{r: r, key: kb, hub: hub}}
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
	if err := put(p.BToA.r.peers, p.BToA.key, a); err != nil {
		return err
	}
	// The program runs on data_ready: bytes queued before the join would
	// wait for the next segment, which may never come. Setting SO_RCVLOWAT
	// runs data_ready now (tcp_set_rcvlowat calls tcp_data_ready), and the
	// program takes the queue in order.
	return errors.Join(setsockopt(a, unix.SO_RCVLOWAT, 1), setsockopt(b, unix.SO_RCVLOWAT, 1))
}

// put adds c to the sockhash m under key.
func put(m *ebpf.Map, key uint64, c *net.TCPConn) error {
	return control(c, func(fd int) error { return m.Update(key, uint64(fd), ebpf.UpdateNoExist) })
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

// Cookie names the direction in NextOverflow.
func (d *Direction) Cookie() uint64 { return d.key }

// Flow reads the program's account of the direction.
func (d *Direction) Flow() (RelayFlow, error) {
	var f loader.RelayPairFlow
	if err := d.r.flows.Lookup(d.key, &f); err != nil {
		return RelayFlow{}, fmt.Errorf("read relay flow: %w", err)
	}
	return RelayFlow{Redirected: f.Redirected, Passed: f.Passed, Overflow: f.Overflow != 0}, nil
}

// Relayed tells the program that the hub has written n bytes on the peer
// socket itself (bytes passed to it), so that it counts the peer's backlog
// right.
func (d *Direction) Relayed(n uint64) error {
	h := loader.RelayPairHub{Sent: d.hub.Sent + n}
	if err := d.r.hubs.Update(d.key, h, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("record relayed bytes: %w", err)
	}
	d.hub = h
	return nil
}

// Drained reports whether every byte of the direction the kernel
// redirected so far has left its queue for peer (the socket the bytes
// leave through) for peer's TCP. The hub waits for it before it writes on
// peer itself (a FIN, or bytes passed to it), so that nothing overtakes a
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
	var (
		info *unix.TCPInfo
		outq int
	)
	err := control(c, func(fd int) (err error) {
		if info, err = unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO); err != nil {
			return err
		}
		outq, err = unix.IoctlGetInt(fd, unix.SIOCOUTQ)
		return err
	})
	if err != nil {
		return 0, err
	}
	return info.Bytes_acked + uint64(outq), nil
}

// cookie returns a socket's cookie (SO_COOKIE), the key its direction has
// in the maps and what bpf_get_socket_cookie gives the program.
func cookie(c *net.TCPConn) (v uint64, err error) {
	err = control(c, func(fd int) (err error) {
		v, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("read socket cookie: %w", err)
	}
	return v, nil
}

func setsockopt(c *net.TCPConn, opt, v int) error {
	return control(c, func(fd int) error { return unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, v) })
}

// control runs f on c's file descriptor.
func control(c *net.TCPConn, f func(fd int) error) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := raw.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
