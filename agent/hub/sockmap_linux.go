package hub

import (
	"cmp"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/agent/pipe"
	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/maps"
)

// A sockmap session, per direction (the two run in parallel: one on the
// session's goroutine, one on its own), A the receiving side, B the other:
//
//	A ──> relay_verdict ──> B's psock queue ──> B's TCP     in the kernel: no copy, the hub sleeps
//	A EOF           → once B's psock queue has drained, B.CloseWrite (FIN)
//	A reset/error   → both aborted (RST); so is a failed write to B
//	B's backlog past BacklogMax (reported by the program) → both aborted
//	bytes passed up (B gone) → copied to B after the drain: pooled buffer
//
// When both directions have ended cleanly the pair is taken apart and both
// connections closed. bpf/relay.c says why there is no backpressure.

// DefaultBacklogMax is SockmapOptions.BacklogMax's default.
const DefaultBacklogMax = 64 << 20

// SockmapOptions configure OpenSockmap. The zero value uses the defaults.
type SockmapOptions struct {
	// BacklogMax bounds what the kernel may hold for one direction of a
	// session whose receiver is slower than its sender: past it the
	// session is reset. DefaultBacklogMax.
	BacklogMax uint64
}

// Sockmap is the kernel relay of a hub (bpf/relay.c, through packages
// loader and maps). One serves any number of hubs and sessions.
type Sockmap struct {
	prog       *loader.Relay
	pairs      *maps.Relay
	backlogMax uint64
	done       chan struct{} // closed when watch returns

	mu       sync.Mutex // guards the following
	overflow map[uint64]func()
}

// OpenSockmap loads the kernel relay. On a kernel that cannot run it the
// error wraps loader.ErrRelayNotSupported.
func OpenSockmap(opts SockmapOptions) (*Sockmap, error) {
	opts.BacklogMax = cmp.Or(opts.BacklogMax, DefaultBacklogMax)
	prog, err := loader.OpenRelay(loader.RelayOptions{BacklogMax: opts.BacklogMax})
	if err != nil {
		return nil, err
	}
	pairs, err := maps.NewRelay(prog.Maps())
	if err != nil {
		return nil, errors.Join(err, prog.Close())
	}
	s := &Sockmap{prog: prog, pairs: pairs, backlogMax: opts.BacklogMax, done: make(chan struct{}), overflow: map[uint64]func(){}}
	go s.watch()
	return s, nil
}

// Close unloads the relay; close it after the hubs using it have stopped.
func (s *Sockmap) Close() error {
	err := s.pairs.Close()
	<-s.done
	return errors.Join(err, s.prog.Close())
}

// watch runs the callbacks of the directions the program reports.
func (s *Sockmap) watch() {
	defer close(s.done)
	for {
		key, err := s.pairs.NextOverflow()
		if err != nil {
			return
		}
		s.mu.Lock()
		f := s.overflow[key]
		s.mu.Unlock()
		if f != nil {
			f()
		}
	}
}

// onOverflow runs f if either direction of pair is reported; nil forgets.
func (s *Sockmap) onOverflow(pair *maps.Pairing, f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range []*maps.Direction{pair.AToB, pair.BToA} {
		if f == nil {
			delete(s.overflow, d.Cookie())
		} else {
			s.overflow[d.Cookie()] = f
		}
	}
}

// passBufferSize is the size of the pooled buffers that carry the bytes
// the kernel passes up to the hub.
const passBufferSize = 32 << 10

var passPool = sync.Pool{New: func() any { b := make([]byte, passBufferSize); return &b }}

// kernelSession is a session paired in the sockmap.
type kernelSession struct {
	p       *pairing
	pair    *maps.Pairing
	once    sync.Once
	aborted chan struct{}
	copied  atomic.Int64 // bytes the hub copied itself
}

// abort resets both connections, once.
func (k *kernelSession) abort() {
	k.once.Do(func() { k.p.abort(); close(k.aborted) })
}

// relayKernel acks the session's connections, pairs them in the sockmap
// and relays until both directions have ended or one fails; it returns
// the bytes it relayed, both directions.
func (h *Hub) relayKernel(ctx context.Context, p *pairing) (relayed int64) {
	sm := h.opts.Sockmap
	// Paired before the acks: no agent has sent a byte, and a socket that
	// has seen a FIN could not join. The outlet's ack goes first: the inlet
	// speaks first (it is the TLS client), and its bytes, redirected, then
	// come after that ack on the outlet's connection; the outlet's answers
	// come after the inlet's ack.
	pair, err := sm.pairs.Pair(p.inlet, p.outlet, 1)
	if err != nil {
		h.log.Warn("data session reset: cannot pair it in the sockmap", zap.String("relay", p.relay), zap.Error(err))
		p.abort()
		return 0
	}
	// The overflow callback is in place before the acks let bytes flow:
	// the program reports a direction once, and a report that finds no
	// callback is lost (the session would then grow without bound).
	k := &kernelSession{p: p, pair: pair, aborted: make(chan struct{})}
	sm.onOverflow(pair, func() {
		h.log.Warn("data session reset: a side reads more slowly than the other sends, and the kernel gives sockmap redirects no backpressure",
			zap.String("relay", p.relay), zap.Uint64("backlog_max", sm.backlogMax))
		k.abort()
	})
	if err := sendAcks(p.outlet, p.inlet); err != nil {
		h.log.Debug("data session ended before its ack", zap.String("relay", p.relay), zap.Error(err))
		sm.onOverflow(pair, nil)
		pair.Unpair()
		k.abort()
		return 0
	}
	clean := h.runKernel(ctx, k)
	sm.onOverflow(pair, nil)
	var kernel int64
	for _, d := range []*maps.Direction{pair.AToB, pair.BToA} {
		if f, err := d.Flow(); err == nil {
			kernel += int64(f.Redirected)
		}
	}
	h.redirected.Add(kernel)
	h.spliced.Add(kernel + k.copied.Load())
	if err := pair.Unpair(); err != nil {
		h.log.Warn("sockmap entries left behind", zap.Error(err))
	}
	if clean {
		pipe.TCP(p.inlet).Close() // disarmed: the clean end (pipe.Arm)
		pipe.TCP(p.outlet).Close()
	}
	return kernel + k.copied.Load()
}

// runKernel runs both directions of a paired session until both have ended
// cleanly (true), or one failed or ctx ended, which aborts both.
func (h *Hub) runKernel(ctx context.Context, k *kernelSession) bool {
	stop := context.AfterFunc(ctx, k.abort)
	end := func(src, dst *net.TCPConn, d *maps.Direction) {
		if err := relayDirection(src, dst, d, &k.copied, k.aborted); err != nil {
			k.abort()
			if !errors.Is(err, errAborted) {
				h.log.Debug("data session aborted", zap.String("relay", k.p.relay), zap.Error(err))
			}
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { end(k.p.outlet, k.p.inlet, k.pair.BToA) })
	end(k.p.inlet, k.p.outlet, k.pair.AToB)
	wg.Wait()
	if !stop() {
		<-k.aborted // ctx ended meanwhile: its abort is under way
	}
	select {
	case <-k.aborted:
		return false
	default:
		return true
	}
}

// relayDirection waits on src for what the kernel leaves to the hub: bytes
// passed up, which it copies to dst, then EOF or an error. It returns nil
// when src ended cleanly and the FIN was passed on.
func relayDirection(src, dst *net.TCPConn, d *maps.Direction, n *atomic.Int64, aborted <-chan struct{}) error {
	var (
		read  uint64
		sleep backoff
	)
	for {
		if err := waitReadable(src); err != nil {
			return err
		}
		nr, err := relayPassed(src, dst, d, aborted)
		read += uint64(nr)
		n.Add(int64(nr))
		switch {
		case err == nil:
			sleep = 0
		case err == io.EOF:
			// EOF shows while bytes passed to src may still wait behind
			// redirects in its psock queue: the program's count says.
			f, err := d.Flow()
			if err != nil {
				return err
			}
			if read < f.Passed {
				if err := sleep.wait(aborted); err != nil {
					return err
				}
				continue
			}
			if err := drain(d, dst, aborted); err != nil {
				return err
			}
			if err := dst.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ENOTCONN) {
				return err
			}
			return nil
		default:
			return err
		}
	}
}

// relayPassed reads what the kernel passed up to src and writes it to dst,
// after every byte it redirected before them, and tells the program.
func relayPassed(src, dst *net.TCPConn, d *maps.Direction, aborted <-chan struct{}) (int, error) {
	bp := passPool.Get().(*[]byte)
	defer passPool.Put(bp)
	nr, err := src.Read(*bp)
	if nr == 0 {
		return 0, err
	}
	if err := drain(d, dst, aborted); err != nil {
		return 0, err
	}
	if _, err := dst.Write((*bp)[:nr]); err != nil {
		return 0, err
	}
	return nr, d.Relayed(uint64(nr))
}

var errAborted = errors.New("session aborted")

// drain waits until the kernel's queue for dst holds no byte of d. It polls:
// nothing signals the kernel worker's progress.
func drain(d *maps.Direction, dst *net.TCPConn, aborted <-chan struct{}) error {
	var sleep backoff
	for {
		ok, err := d.Drained(dst)
		if err != nil || ok {
			return err
		}
		if err := sleep.wait(aborted); err != nil {
			return err
		}
	}
}

// backoff sleeps between polls, from 20µs doubling up to 5ms.
type backoff time.Duration

func (b *backoff) wait(aborted <-chan struct{}) error {
	*b = min(max(2**b, backoff(20*time.Microsecond)), backoff(5*time.Millisecond))
	t := time.NewTimer(time.Duration(*b))
	defer t.Stop()
	select {
	case <-aborted:
		return errAborted
	case <-t.C:
		return nil
	}
}

// waitReadable waits, with no buffer, until c has something for the hub:
// EOF, an error, or bytes passed up. It polls rather than peeks or reads:
// reads of a socket in a sockmap (MSG_PEEK ones too) made the kernel hand
// the program some bytes twice (Linux 6.18), so the hub reads only what
// is there for it.
func waitReadable(c *net.TCPConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	return raw.Read(func(fd uintptr) bool {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}, 0)
		return n > 0 || (err != nil && err != unix.EINTR)
	})
}
