package hub

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/internal/alpn"
	"github.com/sluicehq/sluice/agent/pipe"
	"github.com/sluicehq/sluice/agent/relay"
)

// HubOptions tune a Hub. Zero values mean the defaults.
type HubOptions struct {
	Logger *zap.Logger // zap.NewNop()
	// Audit gets one line for every data session paired and ended (with
	// its bytes); nil: none. cmd passes the logger named "audit", as to
	// the authority (authority.Options.Audit).
	Audit          *zap.Logger
	SessionTimeout time.Duration // 10s: how long a half-paired data session waits for its peer
	HelloTimeout   time.Duration // 10s: how long a new connection may take to say who it is
	// Sockmap, if set, relays paired data connections in the kernel
	// (OpenSockmap) instead of with splice(2). The caller closes it after
	// Serve has returned.
	Sockmap *Sockmap
	// Limits bound unauthenticated connections and dial requests; zero
	// fields mean the defaults (Limits.WithDefaults).
	Limits Limits
	// Authority, if set, is the project's authority, in this process (agent
	// hub with both roles). Without it the hub is a relay only: it holds no
	// key that signs anything, and the authority connects to it (agent
	// authority, RunAuthorityLink).
	Authority *authority.Service
	// HeartbeatInterval is how often the authority in this process signs a
	// heartbeat for the agents (15s).
	HeartbeatInterval time.Duration
	// Cluster, if set, is the cluster of hubs this one is part of, for
	// GET /v1/cluster (cluster.go).
	Cluster Cluster
}

// Hub is the rendezvous point: it keeps the relay names agents claim, relays
// paired data connections (the agents' channels, and their exchanges with
// the authority) and passes the authority's signed words on.
type Hub struct {
	project *authority.Project
	local   *authority.Service // nil: a relay only
	roster  *roster
	tlsConf *tls.Config
	log     *zap.Logger
	opts    HubOptions

	spliced    atomic.Int64 // bytes relayed, both directions, however
	redirected atomic.Int64 // of those, bytes the kernel redirected (sockmap)
	punches    atomic.Int64 // direct paths coordinated: opPunchAt passed on (hub_punch.go)
	direct     atomic.Int64 // sessions whose inlet said they went direct

	// memberMu serializes member changes with their pushes, so that every
	// session gets the authority's words in generation order.
	memberMu sync.Mutex
	refused  refusals    // what the limits refused
	gate     *gate       // unauthenticated connections
	dials    *dialLimits // dial requests and pending sessions
	private  []string    // texts no refusal may carry (see scrub)
	logs     limitedLogs // log sampling of refusals members can flood

	drain draining // a graceful shutdown (hub_drain.go)

	mu        sync.Mutex            // guards the following
	relays    map[string][]*session // the holders of each name (hub_replicas.go)
	pending   map[[relay.TokenSize]byte]*pairing
	sessions  map[*session]struct{}
	authority *session // the authority's link, when it runs elsewhere
	wg        sync.WaitGroup
}

// NewHub makes a hub for project: a relay, and with opts.Authority the
// authority too. A relay needs of the project only its ID, the authority's
// certificate and the hub's own key and certificate (authority.LoadRelay).
func NewHub(p *authority.Project, opts HubOptions) *Hub {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Audit == nil {
		opts.Audit = zap.NewNop()
	}
	if opts.SessionTimeout == 0 {
		opts.SessionTimeout = 10 * time.Second
	}
	if opts.HelloTimeout == 0 {
		opts.HelloTimeout = 10 * time.Second
	}
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = relay.DefaultHeartbeatInterval
	}
	opts.Limits = opts.Limits.WithDefaults()
	h := &Hub{
		project: p, local: opts.Authority, roster: newRoster(p), log: opts.Logger, opts: opts,
		relays:   map[string][]*session{},
		pending:  map[[relay.TokenSize]byte]*pairing{},
		sessions: map[*session]struct{}{},
		private:  privateTexts(p),
	}
	h.gate = newGate(opts.Limits, &h.refused, opts.Logger)
	h.dials = newDialLimits(opts.Limits, &h.refused)
	h.tlsConf = &tls.Config{
		MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{{
			Certificate: [][]byte{p.HubCert.Raw, p.Cert.Raw},
			PrivateKey:  p.HubKey,
			Leaf:        p.HubCert,
		}},
		NextProtos: []string{relay.ControlALPN},
		// Any certificate: the handshake proves the node holds the key; what
		// it may do is what the credential it presents says.
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: identity.RequireNodeKey,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return alpn.Require(cs, relay.ControlALPN)
		},
	}
	return h
}

// Serve accepts connections on ln until ctx is done, then closes every
// connection (with a reset) and waits for them. After Shutdown it returns
// once the shutdown is over.
func (h *Hub) Serve(ctx context.Context, ln net.Listener) error {
	// Also cancelled when accepting fails, so every connection ends with Serve.
	ctx, cancel := context.WithCancel(ctx)
	defer h.shutdown()
	defer cancel()
	if !h.drain.serve(ln, cancel) {
		ln.Close()
		return nil
	}
	if h.local != nil {
		stop, err := h.serveLocalAuthority(ctx)
		if err != nil {
			return err
		}
		defer stop()
	}
	go func() { <-ctx.Done(); ln.Close() }()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if h.drain.isStarted() {
				<-ctx.Done() // Shutdown cancels it once the sessions it lets finish have ended
				return nil
			}
			if !retryAccept(err) {
				return fmt.Errorf("accept: %w", err)
			}
			// Out of file descriptors or memory, or one connection that
			// died in the queue: the sessions already served must go on.
			// Wait for some to end, as net/http's Server does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			h.log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("retry_in", backoff))
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		tc := c.(*net.TCPConn)
		// Counted from accept until it authenticates; past the caps the
		// connection is reset at once, before it costs a goroutine.
		ps := h.gate.enter(sourceOf(tc.RemoteAddr()))
		if ps == nil {
			pipe.TCP(tc).Abort()
			continue
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer ps.leave()
			// The connection ends with Serve, with a reset: peers must not
			// take a hub shutdown for the other side's clean close.
			stop := context.AfterFunc(ctx, func() { pipe.TCP(tc).Abort() })
			defer stop()
			h.handle(ctx, tc, ps)
		}()
	}
}

// ProjectDir is the project directory the hub serves from.
func (h *Hub) ProjectDir() string { return h.project.Dir }

// retryAccept reports whether an accept error is worth waiting out.
func retryAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.ECONNABORTED)
}

func (h *Hub) shutdown() {
	h.mu.Lock()
	for s := range h.sessions {
		s.conn.Close()
	}
	for _, p := range h.pending {
		p.close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// Stats is a snapshot of the hub's state.
type Stats struct {
	Sessions int      `json:"sessions"`
	Relays   []string `json:"relays"`
	// Replicas are the holders of each relay name (hub_replicas.go).
	Replicas map[string][]Replica `json:"replicas"`
	Pending  int                  `json:"pending"`
	// Relay is how data sessions cross the hub: "splice" or "sockmap".
	Relay string `json:"relay"`
	// Spliced counts the bytes relayed in both directions by data sessions
	// that have ended, whichever way they crossed (the name is older than
	// the sockmap mode).
	Spliced int64 `json:"spliced_bytes"`
	// Redirected counts, of those, the bytes the kernel redirected from
	// socket to socket (sockmap mode); the rest the hub copied.
	Redirected int64 `json:"redirected_bytes"`
	// Punches counts the direct paths the hub coordinated (the owner's
	// port passed on to the inlet), Direct the sessions whose inlet said
	// they went direct: the hub carries none of their bytes
	// (hub_punch.go).
	Punches int64 `json:"punches"`
	Direct  int64 `json:"direct_sessions"`
	// Unauthenticated is how many connections have not authenticated yet,
	// UnauthenticatedPeak the most there were at once, and
	// UnauthenticatedSourcePeak the most from one source at once.
	Unauthenticated           int `json:"unauthenticated"`
	UnauthenticatedPeak       int `json:"unauthenticated_peak"`
	UnauthenticatedSourcePeak int `json:"unauthenticated_source_peak"`
	// Refused counts what the limits refused, by reason.
	Refused Refusals `json:"refused"`
	// Limits are the limits in force.
	Limits Limits `json:"limits"`
	// Authority is where the project's authority is: "local" (in the hub's
	// process), "linked" (agent authority is connected) or "absent".
	Authority string `json:"authority"`
	// MemberGeneration is the newest member-state generation the hub has
	// heard from the authority.
	MemberGeneration uint64 `json:"member_generation"`
}

// Stats returns a snapshot of the hub's state.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	pairings := map[*pairing]bool{}
	for _, p := range h.pending {
		pairings[p] = true
	}
	st := Stats{Sessions: len(h.sessions), Pending: len(pairings), Relay: "splice",
		Spliced: h.spliced.Load(), Redirected: h.redirected.Load(), Punches: h.punches.Load(), Direct: h.direct.Load(),
		Refused: h.refused.snapshot(), Limits: h.opts.Limits}
	st.Unauthenticated, st.UnauthenticatedPeak, st.UnauthenticatedSourcePeak = h.gate.usage()
	switch {
	case h.local != nil:
		st.Authority = "local"
	case h.authority != nil:
		st.Authority = "linked"
	default:
		st.Authority = "absent"
	}
	st.MemberGeneration = h.roster.generation()
	if h.opts.Sockmap != nil {
		st.Relay = "sockmap"
	}
	for name := range h.relays {
		st.Relays = append(st.Relays, name)
	}
	st.Replicas = h.replicasLocked()
	return st
}

func (h *Hub) handle(ctx context.Context, c *net.TCPConn, ps *pass) {
	c.SetReadDeadline(time.Now().Add(h.opts.HelloTimeout))
	var head [len(relay.DataMagic)]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		c.Close()
		return
	}
	switch string(head[:]) {
	case relay.DataMagic:
		h.handleData(ctx, c, ps)
		return
	case relay.DataMagicV1:
		h.log.Info("data connection of an agent older than this hub (no ack): upgrade the agent", zap.Stringer("remote", c.RemoteAddr()))
		c.Close()
		return
	}
	if head[0] != 0x16 { // TLS handshake record
		h.log.Debug("unknown protocol", zap.Stringer("remote", c.RemoteAddr()))
		c.Close()
		return
	}
	h.handleControl(ctx, c, head[:], ps)
}

// prefixConn replays bytes already read before the rest of the connection.
type prefixConn struct {
	*net.TCPConn
	r io.Reader
}

func (p *prefixConn) Read(b []byte) (int, error) { return p.r.Read(b) }

func (h *Hub) handleData(ctx context.Context, c *net.TCPConn, ps *pass) {
	var tok [relay.TokenSize]byte
	if _, err := io.ReadFull(c, tok[:]); err != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	h.mu.Lock()
	p := h.pending[tok]
	if p == nil || ctx.Err() != nil {
		h.mu.Unlock()
		if ok, n := h.logs.unknownToken.Allow(time.Now()); ok {
			h.log.Debug("data connection with unknown token", zap.Stringer("remote", c.RemoteAddr()), zap.Int64("more_not_logged", n))
		}
		c.Close()
		return
	}
	delete(h.pending, tok)
	ready := p.join(tok, c) || p.local
	if ready {
		delete(h.pending, p.inletTok)
		delete(h.pending, p.outletTok)
		p.timer.Stop()
	}
	h.mu.Unlock()
	// A known token authenticates the connection: the hub handed it to a
	// member over its control connection. An agent's exchange with the
	// authority stays unauthenticated: it is how a stranger enrolls.
	if p.relay != relay.AuthorityRelay || tok == p.outletTok {
		ps.authenticated()
	}
	if !ready {
		return
	}
	defer p.end()
	p.release()
	if p.local {
		h.exchangeLocal(ctx, p.inlet)
		return
	}
	defer h.drain.relay()()
	// From here the two connections carry the session's stream: if the hub
	// dies they reset, never FIN (pipe.Arm), until the session's clean end.
	for _, dc := range []*net.TCPConn{p.inlet, p.outlet} {
		if err := pipe.Arm(dc); err != nil {
			h.log.Debug("data session reset: cannot arm it", zap.String("relay", p.relay), zap.Error(err))
			p.abort()
			return
		}
	}
	start := time.Now()
	if h.opts.Sockmap != nil {
		h.log.Debug("relaying in the kernel", zap.String("relay", p.relay), zap.String("from", p.from))
		h.auditPaired(p, "sockmap")
		h.auditEnded(p, start, h.relayKernel(ctx, p))
		return
	}
	h.log.Debug("splicing", zap.String("relay", p.relay), zap.String("from", p.from))
	h.auditPaired(p, "splice")
	if err := sendAcks(p.inlet, p.outlet); err != nil {
		h.log.Debug("data session ended before its ack", zap.String("relay", p.relay), zap.Error(err))
		p.abort()
		h.auditEnded(p, start, 0)
		return
	}
	res := pipe.Run(ctx, pipe.TCP(p.inlet), pipe.TCP(p.outlet), nil)
	h.spliced.Add(res.AToB + res.BToA)
	h.auditEnded(p, start, res.AToB+res.BToA)
}

// auditPaired and auditEnded write a data session's audit lines.
func (h *Hub) auditPaired(p *pairing, mode string) {
	h.opts.Audit.Info("data session paired", zap.String("relay", p.relay), zap.String("from", p.from), zap.String("relayed_by", mode))
}

func (h *Hub) auditEnded(p *pairing, start time.Time, bytes int64) {
	h.opts.Audit.Info("data session ended", zap.String("relay", p.relay), zap.String("from", p.from),
		zap.Int64("bytes", bytes), zap.Duration("duration", time.Since(start)))
}

// sendAcks tells both agents of a session that the hub relays it.
func sendAcks(conns ...*net.TCPConn) error {
	for _, c := range conns {
		c.SetWriteDeadline(time.Now().Add(ackTimeout))
		_, err := c.Write([]byte{relay.DataAck})
		c.SetWriteDeadline(time.Time{})
		if err != nil {
			return fmt.Errorf("send ack: %w", err)
		}
	}
	return nil
}

// ackTimeout bounds the write of an ack, which a new connection's empty
// send buffer takes at once.
const ackTimeout = 5 * time.Second

// pairing is a data session waiting for its two connections.
type pairing struct {
	relay, from         string
	inletTok, outletTok [relay.TokenSize]byte
	inlet, outlet       *net.TCPConn
	timer               *time.Timer
	release             func()                  // ends the session's count as pending; idempotent
	owner               atomic.Pointer[session] // the replica it was announced to; nil for the authority
	punch               *punch                  // the direct-path offer, if any; guarded by Hub.mu (hub_punch.go)
	// local: the other side is the authority in this process, not a
	// connection; the inlet's connection alone starts the session.
	local bool
}

// announceTo counts the session as owner's (and no longer a previous
// owner's, whose connection failed before it heard of it).
func (p *pairing) announceTo(owner *session) {
	owner.active.Add(1)
	if prev := p.owner.Swap(owner); prev != nil {
		prev.active.Add(-1)
	}
}

// end takes the session off its owner's active count, once.
func (p *pairing) end() {
	if o := p.owner.Swap(nil); o != nil {
		o.active.Add(-1)
	}
}

// join records c under tok and reports whether both sides are present.
func (p *pairing) join(tok [relay.TokenSize]byte, c *net.TCPConn) bool {
	if tok == p.inletTok {
		p.inlet = c
	} else {
		p.outlet = c
	}
	return p.inlet != nil && p.outlet != nil
}

func (p *pairing) close() {
	for _, c := range []*net.TCPConn{p.inlet, p.outlet} {
		if c != nil {
			c.Close()
		}
	}
}

// abort resets both connections of a paired session.
func (p *pairing) abort() {
	for _, c := range []*net.TCPConn{p.inlet, p.outlet} {
		if c != nil {
			pipe.TCP(c).Abort()
		}
	}
}

// newPairing registers a data session for relay and returns it; release
// is called once it started or timed out.
func (h *Hub) newPairing(relay, from string, release func()) (*pairing, error) {
	p := &pairing{relay: relay, from: from, release: release}
	if _, err := rand.Read(p.inletTok[:]); err != nil {
		return nil, err
	}
	if _, err := rand.Read(p.outletTok[:]); err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.pending[p.inletTok] = p
	h.pending[p.outletTok] = p
	h.mu.Unlock()
	p.timer = time.AfterFunc(h.opts.SessionTimeout, func() {
		h.mu.Lock()
		live := h.forgetLocked(p)
		h.mu.Unlock()
		if live {
			p.fail()
			if ok, n := h.logs.timeout.Allow(time.Now()); ok {
				h.log.Info("data session timed out waiting for its peer", zap.String("relay", relay), zap.String("from", from),
					zap.Int64("more_not_logged", n))
			}
		}
	})
	return p, nil
}

// forgetLocked takes a half-paired session off the pending ones and
// reports whether it was still there; h.mu is held.
func (h *Hub) forgetLocked(p *pairing) bool {
	_, live := h.pending[p.inletTok]
	_, live2 := h.pending[p.outletTok]
	delete(h.pending, p.inletTok)
	delete(h.pending, p.outletTok)
	return live || live2
}

// fail ends a session that never started: its counts, and the connection
// that came (its agent reads EOF before the ack: relay.ErrSessionLost,
// and asks again).
func (p *pairing) fail() {
	p.timer.Stop()
	p.release()
	p.end()
	p.close()
}
