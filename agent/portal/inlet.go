package portal

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/channel"
	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/flowlog"
	"github.com/sluicehq/sluice/agent/pipe"
	"github.com/sluicehq/sluice/agent/policy"
	"github.com/sluicehq/sluice/agent/relay"
)

// Inlet connection pipeline:
//
//	app ──accept──> hub.Dial (control RTT) ──> OpenData (TCP to hub)
//	    ──> TLS client handshake through the hub, verifying the outlet
//	    ──> channel records: "open" control ──> pipe.Run(app, channel)
//	        the outlet's first record is its status (control), checked
//	        before the app sees data.
//
// On a new channel the app's first bytes are sealed and sent without
// waiting for the status, so the status costs no round trip. On a warm
// channel the inlet waits for the status before it reads a byte of the
// app's (openWarm): the outlet may have closed the channel meanwhile, and
// the connection then moves to a new channel with nothing lost or repeated.

// Control bytes of a portal channel (channel.Conn.WriteControl).
const (
	ctlOpen           byte = 0x10 // inlet → outlet: connect to your target
	ctlWarm           byte = 0x11 // inlet → outlet: no connection yet, keep the channel warm (a background direct attempt)
	statusOK          byte = 0    // outlet → inlet: connected to target
	statusUnreachable byte = 1    // the outlet could not connect to its target
	statusNoOutlet    byte = 2    // the agent has no outlet by the name asked for
	statusDenied      byte = 3    // the outlet's policy no longer allows the inlet's node
)

type inlet struct {
	spec  InletSpec
	allow *policy.Policy
	ln    *net.TCPListener // nil for a transparent inlet
	svc   netip.AddrPort   // a transparent inlet's service address
	ctx   context.Context
	stop  context.CancelFunc
	lim   limiter
	stats Counters
	peer  atomic.Pointer[string] // node that owned the relay at the last channel
	pool  pool                   // warm channels
	// channels counts the channels opened, reused the connections warm
	// channels carried
	channels, reused atomic.Int64
	seq              uint64 // the order inlets were added in (registry.go)
	// number is the inlet's portal number in the data path (0: none);
	// guarded by the Manager's mu (registry.go).
	number uint32

	mu    sync.Mutex // guards conns
	conns map[*net.TCPConn]ConnInfo
}

// ConnInfo describes an inlet's open connection.
type ConnInfo struct {
	App      netip.AddrPort // the application's address
	Workload uint32         // local workload number the kernel saw (inlets with --allow-local); 0 = unknown
}

func (in *inlet) info() InletInfo {
	listening := "transparent " + in.svc.String()
	if in.ln != nil {
		listening = in.ln.Addr().String()
	}
	return InletInfo{InletSpec: in.spec, Listening: listening, Counters: in.stats.Snapshot(),
		Channels: in.channels.Load(), Warm: in.pool.len(), WarmReused: in.reused.Load()}
}

func (in *inlet) close() error {
	in.stop()
	return in.stopAccepting()
}

// stopAccepting closes the inlet's listener (the kernel then refuses new
// connections) and its warm channels; live connections go on.
func (in *inlet) stopAccepting() error {
	in.pool.close()
	if in.ln == nil {
		return nil
	}
	if err := in.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// AddInlet creates an inlet. An explicit inlet starts listening on From; a
// transparent one is served through AcceptTransparent (or ServeTransparent).
func (m *Manager) AddInlet(spec InletSpec) (InletInfo, error) {
	allow, err := spec.check()
	if err != nil {
		return InletInfo{}, fmt.Errorf("create inlet: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.draining {
		return InletInfo{}, fmt.Errorf("create inlet %q: %w", spec.Name, ErrClosed)
	}
	if _, ok := m.inlets[spec.Name]; ok {
		return InletInfo{}, fmt.Errorf("create inlet %q: %w", spec.Name, ErrExists)
	}
	ctx, stop := context.WithCancel(m.ctx)
	m.seq++
	in := &inlet{spec: spec, allow: allow, ctx: ctx, stop: stop, lim: make(limiter, m.opts.MaxConns),
		conns: map[*net.TCPConn]ConnInfo{}, pool: pool{ttl: m.opts.WarmIdle}, seq: m.seq}
	if spec.Transparent {
		in.svc, _ = ServiceAddr(spec.From) // checked above
		if other := m.serviceLocked(in.svc); other != nil {
			stop()
			return InletInfo{}, fmt.Errorf("create inlet %q: inlet %q already serves %s: %w", spec.Name, other.spec.Name, in.svc, ErrExists)
		}
		m.inlets[spec.Name] = in
		return in.info(), nil
	}
	if spec.AllowLocal != "" && m.opts.Local == nil {
		stop()
		return InletInfo{}, fmt.Errorf("create inlet %q: --allow-local on an explicit inlet needs the agent's BPF data path: %w", spec.Name, ErrInvalid)
	}
	// Armed (pipe.Arm): the connections it accepts reset, never FIN, if
	// the agent dies before their stream ended.
	lc := net.ListenConfig{Control: pipe.ArmControl}
	ln, err := lc.Listen(context.Background(), listenNetwork(spec.From), spec.From)
	if err != nil {
		stop()
		return InletInfo{}, fmt.Errorf("create inlet %q: %w", spec.Name, err)
	}
	in.ln = ln.(*net.TCPListener)
	m.inlets[spec.Name] = in
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.acceptLoop(in)
	}()
	return in.info(), nil
}

// listenNetwork keeps an IPv4 listen address IPv4-only: "0.0.0.0:15432"
// means every IPv4 address, as the operator wrote it, not a dual-stack socket.
func listenNetwork(addr string) string {
	host, _, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); ip != nil && ip.To4() != nil {
		return "tcp4"
	}
	return "tcp"
}

// RemoveInlet stops an inlet and closes its connections.
func (m *Manager) RemoveInlet(name string) error {
	m.mu.Lock()
	in, ok := m.inlets[name]
	delete(m.inlets, name)
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("delete inlet %q: %w", name, ErrNotFound)
	}
	return in.close()
}

// serviceLocked finds the transparent inlet serving svc, or nil.
func (m *Manager) serviceLocked(svc netip.AddrPort) *inlet {
	for _, in := range m.inlets {
		if in.spec.Transparent && in.svc == svc {
			return in
		}
	}
	return nil
}

// ServeTransparent serves a connection accepted on the agent's transparent
// listener. Its local address is the service address the application
// dialed, which picks the inlet; without one the connection is reset.
// workload is the local workload number the kernel recorded for it.
func (m *Manager) ServeTransparent(c *net.TCPConn, workload uint32) {
	m.mu.Lock()
	in := m.serviceLocked(addrPort(c.LocalAddr()))
	m.mu.Unlock()
	if in == nil {
		m.log.Debug("transparent connection to a service no inlet serves; resetting",
			zap.Stringer("service", c.LocalAddr()), zap.Stringer("client", c.RemoteAddr()))
		pipe.TCP(c).Abort()
		return
	}
	m.serve(in, c, ConnInfo{App: addrPort(c.RemoteAddr()), Workload: workload})
}

// CloseConns resets the open connections of inlet that keep rejects, and
// returns how many it reset.
func (m *Manager) CloseConns(inlet string, keep func(ConnInfo) bool) int {
	m.mu.Lock()
	in := m.inlets[inlet]
	m.mu.Unlock()
	if in == nil {
		return 0
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	n := 0
	for c, info := range in.conns {
		if !keep(info) {
			pipe.TCP(c).Abort()
			delete(in.conns, c)
			n++
		}
	}
	return n
}

func addrPort(a net.Addr) netip.AddrPort {
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := t.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func (m *Manager) acceptLoop(in *inlet) {
	for {
		c, err := in.ln.AcceptTCP()
		if err != nil {
			if in.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				m.log.Error("inlet stopped accepting", zap.String("inlet", in.spec.Name), zap.Error(err))
			}
			return
		}
		if in.spec.AllowLocal == "" {
			m.serve(in, c, ConnInfo{App: addrPort(c.RemoteAddr())})
			continue
		}
		err = m.opts.Local(in.spec.Name, c, func(workload uint32) {
			m.serve(in, c, ConnInfo{App: addrPort(c.RemoteAddr()), Workload: workload})
		})
		if err != nil {
			in.stats.Accepted.Add(1)
			in.stats.Refused.Add(1)
			in.stats.RefusedLocal.Add(1)
			m.inletRefused(in, c, ConnInfo{App: addrPort(c.RemoteAddr())}, flowlog.ByLocalPolicy, err)
			m.log.Info("inlet connection refused by --allow-local", zap.String("inlet", in.spec.Name), zap.Error(err))
			pipe.TCP(c).Abort()
		}
	}
}

// serve carries one accepted connection of in, in its own goroutine.
func (m *Manager) serve(in *inlet, c *net.TCPConn, info ConnInfo) {
	accepted := time.Now()
	in.stats.Accepted.Add(1)
	pipe.Arm(c) // its listener armed it already, if it could
	if !in.lim.acquire() {
		in.stats.Failed.Add(1)
		m.inletRefused(in, c, info, flowlog.ByLimit, fmt.Errorf("the inlet has %d connections open, its limit", m.opts.MaxConns))
		m.log.Warn("inlet at its connection limit; refusing", zap.String("inlet", in.spec.Name), zap.Int("limit", m.opts.MaxConns))
		pipe.TCP(c).Abort()
		return
	}
	if !m.enter() {
		in.lim.release()
		pipe.TCP(c).Abort()
		return
	}
	in.mu.Lock()
	in.conns[c] = info
	in.mu.Unlock()
	go func() {
		defer m.leave()
		defer in.lim.release()
		in.stats.Active.Add(1)
		defer in.stats.Active.Add(-1)
		m.serveInlet(in, c, info, accepted)
		in.mu.Lock()
		delete(in.conns, c)
		in.mu.Unlock()
	}()
}

func (m *Manager) serveInlet(in *inlet, app *net.TCPConn, info ConnInfo, accepted time.Time) {
	log := m.log.With(zap.String("inlet", in.spec.Name), zap.Stringer("client", app.RemoteAddr()))
	flow := m.inletFlow(in, app, info)
	s, err := m.session(in)
	if err != nil {
		err = explainRemote(err)
		if refusedByPolicy(err) {
			in.stats.Refused.Add(1)
			flow.refused(flowlog.ByPolicy, err)
			log.Warn("inlet connection refused", zap.Error(err))
		} else {
			in.stats.Failed.Add(1)
			flow.closed(pipe.Result{Err: err})
			log.Warn("inlet connection failed", zap.Error(err))
		}
		pipe.TCP(app).Abort()
		return
	}
	m.timings.Setup(in.spec.Name, time.Since(accepted))
	s.app.Store(app)
	flow.peer(s.peer)
	var stream pipe.Pump = s.ch
	if s.first != nil {
		s.first.allowed = flow.opened // when the outlet says it connected
		stream, s.first = s.first, nil
	} else {
		flow.opened() // openWarm had the outlet's word
	}
	untap := m.tapStream(s.ch, app, in.spec.Name, s.peer.NodeID, true)
	var broke atomic.Bool
	if s.direct {
		stream = breakWatch{stream, s.ch.Raw(), &broke}
	}
	res := pipe.Run(in.ctx, pipe.TCP(app), pipe.Keep(stream), &in.stats.Bytes)
	if broke.Load() {
		m.broke(s.peer.NodeID, s.epoch, in)
	}
	untap(res.Err)
	s.app.Store(nil)
	flow.ended(res)
	// A relayed channel to a peer that is direct now is not kept: the next
	// connection goes direct.
	if res.Err == nil && in.ctx.Err() == nil && !m.gone.crosses(s) && (s.direct || !m.paths.isDirect(s.peer.NodeID)) {
		in.pool.put(s)
		return
	}
	s.close()
	if res.Err != nil && in.ctx.Err() == nil {
		err := explainRemote(res.Err)
		switch {
		case refusedByPolicy(err):
			in.stats.Refused.Add(1)
		case errors.Is(err, ErrTargetUnreachable), errors.Is(err, channel.ErrNoOutlet), isRemoteAlert(err):
			in.stats.Failed.Add(1)
		}
		log.Info("inlet connection ended with an error", zap.Error(err))
	}
}

// session returns a channel to the outlet that has been asked to open its
// target: a warm one if the pool has one that still works, whose peer the
// inlet's policy still allows as the project knows it now, and whose outlet
// connected to its target; else a new one (whose handshake decides).
func (m *Manager) session(in *inlet) (*session, error) {
	for s := in.pool.take(); s != nil; s = in.pool.take() {
		if m.gone.crosses(s) {
			s.close()
			continue
		}
		if err := channel.Authorize(m.opts.Verifier, in.allow, s.peer); err != nil {
			s.close()
			break // a new channel's handshake decides
		}
		err := m.openWarm(in, s)
		if err == nil {
			in.reused.Add(1)
			return s, nil
		}
		s.close()
		if !errors.Is(err, errChannelGone) {
			return nil, fmt.Errorf("warm channel to %s: %w", in.target(), err)
		}
		// No byte of the app's was read: try the next channel.
	}
	return m.openCold(in)
}

// warmAckWait is how long, at least, the open request on a warm direct
// channel may stay unacknowledged by the outlet's kernel before the path is
// taken for broken (4 round trips of the connection where that is longer):
// longer than Linux's longest delayed ACK (200 ms).
const warmAckWait = 500 * time.Millisecond

// errChannelGone means the outlet's agent closed a warm channel before it
// answered the open request: nothing reached the target, and the
// connection can go through another channel.
var errChannelGone = errors.New("the outlet's agent closed the warm channel")

// openWarm asks the outlet of a warm channel to open its target and waits
// for its status, before any byte of the app's is read. A channel the
// outlet's agent closed (the open cannot be written, or the channel ends
// before the status) gives errChannelGone.
//
// On a direct path the open request is also a probe of the path: if the
// outlet's kernel has not acknowledged it after warmAckWait, the path broke
// while the channel was idle (a NAT or a firewall on the way forgot the
// flow), long before TCP_USER_TIMEOUT would say so. The channel is reset,
// the peer becomes relayed (broke), and the connection, of which no byte
// was read, goes through another channel: the hub's.
func (m *Manager) openWarm(in *inlet, s *session) error {
	if err := s.ch.WriteControl(ctlOpen); err != nil {
		return fmt.Errorf("send open request: %w: %w", err, errChannelGone)
	}
	s.ch.Raw().SetReadDeadline(time.Now().Add(m.opts.HandshakeTimeout))
	var (
		dead atomic.Bool
		wait time.Duration
	)
	if s.direct {
		wait = max(warmAckWait, 4*relay.TCPRTT(s.ch.Raw()))
		probe := time.AfterFunc(wait, func() {
			if tcpUnacked(s.ch.Raw()) {
				dead.Store(true)
				s.ch.Abort()
			}
		})
		defer probe.Stop()
	}
	b, err := s.ch.ReadControl()
	s.ch.Raw().SetReadDeadline(time.Time{})
	if dead.Load() {
		m.broke(s.peer.NodeID, s.epoch, in)
		return fmt.Errorf("read open status: the direct path did not acknowledge the open request in %v: %w", wait, errChannelGone)
	}
	if err != nil {
		if peerClosed(err) {
			return fmt.Errorf("read open status: %w: %w", err, errChannelGone)
		}
		return fmt.Errorf("read open status: %w", err)
	}
	return outletStatus(b)
}

// peerClosed reports whether a channel read failed because the far end
// closed or reset it.
func peerClosed(err error) bool {
	return errors.Is(err, channel.ErrTruncated) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// openCold opens a new channel and sends the open request; the outlet's
// status comes among the data (verdictPump).
func (m *Manager) openCold(in *inlet) (*session, error) {
	s, err := m.openChannel(in, false)
	if err != nil {
		return nil, err
	}
	if err := s.ch.WriteControl(ctlOpen); err != nil {
		err = refusal(s.ch, err)
		s.close()
		return nil, fmt.Errorf("secure channel to %s: %w", in.target(), err)
	}
	s.first = newVerdictPump(s.ch)
	return s, nil
}

// target names where in's channels go, for errors.
func (in *inlet) target() string {
	if in.spec.Direct != "" {
		return "outlet agent " + in.spec.Direct
	}
	return "relay " + strconv.Quote(in.spec.Via)
}

// maxSessionTries bounds the data sessions an inlet asks for, for one
// connection, when the hub loses them before they start.
const maxSessionTries = 3

// openChannel asks the hub for a session to the relay (or dials the outlet
// agent directly) and runs the TLS handshake with the outlet's agent: on a
// direct path if the hub offers one and it can be made (direct.go), else
// through the hub. force: a background attempt at a direct path (paths.go).
func (m *Manager) openChannel(in *inlet, force bool) (*session, error) {
	start := time.Now()
	if in.spec.Direct != "" {
		ctx, cancel := context.WithTimeout(in.ctx, m.opts.HandshakeTimeout)
		defer cancel()
		raw, err := m.dialDirect(ctx, in.spec.Direct)
		if err != nil {
			return nil, err
		}
		return m.secure(ctx, in, raw, nil, "", start, false)
	}
	// A session the hub lost before it started (it is going away, or
	// died) is asked for again: the client has moved to another hub.
	for try := 1; ; try++ {
		// The hub's word first: it may ask this node to wait (pace.go).
		d, err := m.dialFor(in, force)
		if err != nil {
			return nil, err
		}
		in.peer.Store(&d.Owner)
		if d.hold != nil {
			s, err := m.openPunched(in, d, start)
			if err == nil {
				return s, nil
			}
			if refusedByPolicy(err) && (in.spec.OutletNode != "" || !errors.Is(err, channel.ErrWrongPeer)) {
				// The peer proved who it is and this agent refused it (its
				// attributes, or not the node the operator pinned): the
				// path worked, and the hub would carry the same answer. A
				// node other than the one the hub named is the path's
				// fault: through the hub.
				m.directHub().PunchDone(d.Token)
				return nil, err
			}
			m.log.Info("direct path failed; through the hub", zap.String("inlet", in.spec.Name), zap.String("node", d.Owner),
				zap.Duration("after", time.Since(start)), zap.Error(err))
			m.fellBack(d.Owner, in)
		}
		ctx, cancel := context.WithTimeout(in.ctx, m.opts.HandshakeTimeout)
		raw, err := m.opts.Hub.OpenData(ctx, d.Token)
		if errors.Is(err, relay.ErrSessionLost) && try < maxSessionTries {
			cancel()
			continue
		}
		if err != nil {
			cancel()
			return nil, err
		}
		s, err := m.secure(ctx, in, raw, d.Token, d.Owner, start, false)
		cancel()
		return s, err
	}
}

// openPunched makes a direct path for the session d and runs the
// handshake on it; on any failure the caller goes through the hub.
func (m *Manager) openPunched(in *inlet, d dialed, start time.Time) (*session, error) {
	ctx, cancel := context.WithTimeout(in.ctx, m.punchTimeout(m.directHub())+min(m.opts.HandshakeTimeout, directHandshakeTimeout))
	defer cancel()
	raw, err := m.punchInlet(ctx, d)
	if err != nil {
		return nil, err
	}
	s, err := m.secure(ctx, in, raw, d.Token, d.Owner, start, true)
	if err != nil {
		return nil, err
	}
	m.paths.counters.AttemptsOK.Add(1)
	m.directHub().PunchDone(d.Token)
	m.log.Debug("direct path made", zap.String("inlet", in.spec.Name), zap.String("node", d.Owner), zap.Duration("after", time.Since(start)))
	return s, nil
}

// secure runs the TLS handshake with the outlet's agent on raw and makes
// the channel's session. It resets raw if it fails.
func (m *Manager) secure(ctx context.Context, in *inlet, raw *net.TCPConn, token []byte, owner string, start time.Time, direct bool) (*session, error) {
	own := m.opts.Keys.Get()                    // the credential the handshake presents, or a newer one
	expect := cmp.Or(in.spec.OutletNode, owner) // the operator's pin, else the hub's word
	tc := tls.Client(channel.Boundary(raw), channel.Client(m.opts.Keys, m.opts.Verifier, in.spec.Outlet, expect, in.allow))
	fail := func(err error) (*session, error) {
		if direct {
			pipe.TCP(raw).Abort() // the outlet's side falls back at once
		} else {
			raw.Close()
		}
		return nil, fmt.Errorf("secure channel to %s: %w", in.target(), err)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return fail(err)
	}
	peer, err := peerCredential(tc)
	if err != nil {
		return fail(err)
	}
	ch, err := channel.NewConn(raw, tc, true)
	if err != nil {
		return fail(err)
	}
	ch.OnControl = outletStatus
	m.tapWire(ch, in.spec.Name, peer.NodeID, true)
	in.channels.Add(1)
	m.timings.Handshake(in.spec.Name, time.Since(start))
	s := &session{ch: ch, peer: peer, reuseUntil: reuseUntil(own, peer), hub: hubOf(token), opened: start, direct: direct, in: in}
	epoch, closed := m.paths.opened(peer.NodeID, direct, relay.TCPRTT(raw), in)
	s.epoch = epoch
	if direct {
		m.dropWarm(peer.NodeID, false) // the next connections go direct
		closed = join(closed, m.paths.trackRaw(raw))
	}
	untrack := m.chans.track(peer.NodeID, in.allow, s.abort)
	unwatch := m.watchExpiry(channelExpiry(own, peer), m.log.With(zap.String("inlet", in.spec.Name), zap.String("node", peer.NodeID)),
		func() bool { return s.app.Load() != nil }, s.abort)
	s.untrack = func() { untrack(); unwatch(); closed() }
	return s, nil
}

// dialDirect connects to an outlet agent's direct listener.
func (m *Manager) dialDirect(ctx context.Context, addr string) (*net.TCPConn, error) {
	c, err := m.dial(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("connect to outlet agent %s: %w", addr, err)
	}
	return c, nil
}

// dial opens a TCP connection within the manager's dial timeout.
func (m *Manager) dial(ctx context.Context, addr string) (*net.TCPConn, error) {
	return m.dialWith(ctx, addr, nil)
}

// dialTarget opens an outlet's connection to its target, armed before it
// connects (pipe.Arm): it resets, never FINs, if the agent dies before
// the stream ended.
func (m *Manager) dialTarget(ctx context.Context, addr string) (*net.TCPConn, error) {
	return m.dialWith(ctx, addr, pipe.ArmControl)
}

func (m *Manager) dialWith(ctx context.Context, addr string, control func(string, string, syscall.RawConn) error) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: m.opts.DialTimeout, Control: control}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// refusal explains a failed first write on a fresh channel by what the
// outlet's side sent before it closed: an authenticated status (a policy
// refusal among them), or a TLS alert, which is not authenticated
// (explainRemote). Otherwise it returns werr.
func refusal(ch *channel.Conn, werr error) error {
	ch.Raw().SetReadDeadline(time.Now().Add(time.Second))
	b, err := ch.ReadControl()
	switch {
	case err == nil:
		if serr := outletStatus(b); serr != nil {
			return serr
		}
	case errors.Is(err, channel.ErrPeerAlert):
		return err
	}
	return werr
}

// refusedByPolicy reports whether a channel or a connection on it was
// refused because of who the peer is (counted as refused, not failed): its
// attributes, its identity, or a credential the project has since replaced
// or revoked. Only an authenticated word counts: this agent's own checks of
// the outlet's credential, the outlet's status record, the hub's dial_denied
// on its control connection. A TLS alert never does (explainRemote).
func refusedByPolicy(err error) bool {
	if isRemoteAlert(err) {
		return false
	}
	return errors.Is(err, channel.ErrDenied) || errors.Is(err, channel.ErrWrongPeer) ||
		errors.Is(err, credential.ErrStale) || errors.Is(err, credential.ErrRevoked) ||
		// This agent's own check of the peer's credential refused it.
		errors.Is(err, credential.ErrUntrusted) || errors.Is(err, credential.ErrExpired) ||
		errors.Is(err, credential.ErrWrongProject) || errors.Is(err, credential.ErrMalformed)
}

// explainRemote says what a TLS alert from the outlet's side may mean. The
// outlet's agent sends one only when its handshake rejects this agent's
// credential (not signed by the authority it trusts, expired, of another
// project); its policy refusals come in an authenticated status record.
// Nothing authenticates the alert: anyone on the path, the relay included,
// can send the same bytes, so it is counted as a failure, never a refusal.
func explainRemote(err error) error {
	if isRemoteAlert(err) {
		return fmt.Errorf("the outlet's side answered with a TLS alert, which is not authenticated: "+
			"the outlet's agent may have rejected this agent's credential (not trusted, expired, or of another project), "+
			"or someone on the path injected it: %w", err)
	}
	return err
}

// isRemoteAlert reports a TLS alert from the outlet's side: during the
// handshake crypto/tls returns it as a *net.OpError with Op "remote error";
// after it (a TLS 1.3 server checks the client's certificate once the
// client's handshake is done) the channel reports channel.ErrPeerAlert.
func isRemoteAlert(err error) bool {
	var op *net.OpError
	return errors.Is(err, channel.ErrPeerAlert) || errors.As(err, &op) && op.Op == "remote error"
}

// outletStatus checks the outlet's status, the first record it sends.
func outletStatus(b byte) error {
	switch b {
	case statusOK:
		return nil
	case statusNoOutlet:
		return fmt.Errorf("the far agent has no such outlet; name one with the inlet's --outlet: %w", channel.ErrNoOutlet)
	case statusDenied:
		return fmt.Errorf("the outlet refused this connection: its policy does not allow this agent's current attributes: %w", channel.ErrDenied)
	default:
		return ErrTargetUnreachable
	}
}
