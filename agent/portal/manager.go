package portal

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/capture"
	"github.com/sluicehq/sluice/agent/channel"
	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/flowlog"
	"github.com/sluicehq/sluice/agent/internal/limit"
	"github.com/sluicehq/sluice/agent/policy"
)

// Hub is what portals need of the relay client.
type Hub interface {
	// Dial asks for a data session to relay; it returns the token and the
	// node ID of the relay's owner.
	Dial(ctx context.Context, relay string) (token []byte, owner string, err error)
	// OpenData opens a data connection that presents token.
	OpenData(ctx context.Context, token []byte) (*net.TCPConn, error)
}

// Options configure a Manager. Hub, Keys and Verifier are required.
type Options struct {
	Hub              Hub
	Keys             *channel.Keys
	Verifier         *credential.Verifier
	Logger           *zap.Logger   // zap.NewNop()
	MaxConns         int           // 4096: open connections per portal; more are refused with a reset
	HandshakeTimeout time.Duration // 10s
	// WarmIdle is how long a channel whose connection ended cleanly stays
	// open to carry its inlet's next one (pool.go), at most DefaultWarmIdle
	// (an outlet waits a little longer, warmWait); negative: never.
	WarmIdle    time.Duration // DefaultWarmIdle (30s)
	DialTimeout time.Duration // 5s: outlet to target
	// Local decides, for a connection accepted by an explicit inlet with
	// --allow-local, whether the inlet's local policy permits the workload
	// it comes from; if so it calls serve with that workload, else returns
	// why not, and the connection is reset and counted refused. Without it
	// such inlets cannot be created.
	Local func(inlet string, c *net.TCPConn, serve func(workload uint32)) error
	// MemberStateCurrent reports whether the agent's member state is
	// current (the authority's heartbeat heard within its limit, every
	// word up to it). A connection whose channel's credential expires
	// while it flows goes on only while it is (expiry.go). Nil: never,
	// such connections are reset at the expiry.
	MemberStateCurrent func() bool
	// Timings, if set, receives each connection's setup and each new
	// channel's handshake time (timings.go).
	Timings Timings

	// Flows, if set, records an event for every connection opened, closed
	// or refused (flows.go); WorkloadName names the local workload numbers
	// in them (nil: "#N").
	Flows        *flowlog.Log
	WorkloadName func(uint32) string
	// Taps, if set, is where `agentctl capture` taps the portals' bytes
	// (package capture); nil: no captures.
	Taps *capture.Taps

	// Incoming data sessions (incoming.go): at most MaxPending pending at
	// once, MaxPendingPerNode of them from one inlet node, whose sessions
	// come at most IncomingRate a second (IncomingBurst at once). A push
	// past a limit waits for room, up to 5 s, before it is dropped.
	MaxPending        int     // DefaultMaxPending (256)
	MaxPendingPerNode int     // DefaultMaxPendingPerNode (64)
	IncomingRate      float64 // DefaultIncomingRate (1000)
	IncomingBurst     int     // DefaultIncomingBurst (2000)

	// Direct, if set, lets inlets and outlets take direct paths when the
	// hub offers them (direct.go; the Hub must be a DirectHub, and the
	// system Linux). PunchTimeout bounds a direct attempt from the hub's
	// answer until the connection is made: 0 means four control round
	// trips, at least 100 ms.
	Direct       bool
	PunchTimeout time.Duration
}

// Manager owns an agent's inlets and outlets: it is the one registry of
// the running portals (with the portal numbers the data path knows inlets
// by, registry.go), runs both accept loops (an explicit inlet's listener,
// and the agent's transparent listener: AcceptTransparent), and serves the
// data sessions the hub announces (HandleIncoming).
type Manager struct {
	opts    Options
	log     *zap.Logger
	timings Timings // opts.Timings, or noTimings
	ctx     context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup

	chans    channels        // open channels by peer, for ReviewPeer
	incoming *incomingLimits // pending incoming sessions
	pace     limit.Every     // the warning that the hub asks to slow down
	// drainCtx is done when Drain begins: warm channels waiting at the
	// outlet's end close (drain.go).
	drainCtx  context.Context
	drainDone context.CancelFunc

	work  work     // connections served, for Drain (drain.go)
	gone  hubsGone // hubs that said they are going away (hubs.go)
	paths paths    // the paths to the peers (paths.go)
	// punchTo, set by tests only, changes where a direct attempt connects
	// to (an invalid address: it does not connect).
	punchTo atomic.Pointer[func(netip.AddrPort) netip.AddrPort]

	mu       sync.Mutex        // guards the following
	closed   bool              // Close began: no new work
	draining bool              // Drain began: no new portal
	inlets   map[string]*inlet // the registry of inlets (registry.go)
	outlets  map[string]*outlet
	seq      uint64 // inlets added so far
}

// New makes a manager; Close stops every portal and connection.
func New(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.MaxConns == 0 {
		opts.MaxConns = 4096
	}
	opts.WarmIdle = min(cmp.Or(opts.WarmIdle, DefaultWarmIdle), DefaultWarmIdle)
	if opts.HandshakeTimeout == 0 {
		opts.HandshakeTimeout = 10 * time.Second
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 5 * time.Second
	}
	opts.MaxPending = cmp.Or(opts.MaxPending, DefaultMaxPending)
	opts.MaxPendingPerNode = cmp.Or(opts.MaxPendingPerNode, DefaultMaxPendingPerNode)
	opts.IncomingRate = cmp.Or(opts.IncomingRate, DefaultIncomingRate)
	opts.IncomingBurst = cmp.Or(opts.IncomingBurst, DefaultIncomingBurst)
	ctx, stop := context.WithCancel(context.Background())
	drainCtx, drainDone := context.WithCancel(ctx)
	timings := opts.Timings
	if timings == nil {
		timings = noTimings{}
	}
	return &Manager{opts: opts, log: opts.Logger, timings: timings, ctx: ctx, stop: stop, incoming: newIncomingLimits(opts),
		drainCtx: drainCtx, drainDone: drainDone, inlets: map[string]*inlet{}, outlets: map[string]*outlet{}}
}

// Incoming returns the state of the limits on incoming data sessions.
func (m *Manager) Incoming() IncomingCounters { return m.incoming.snapshot() }

// Close stops every portal, closes every connection and waits for them.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	var errs []error
	for _, in := range m.inlets {
		errs = append(errs, in.close())
	}
	m.mu.Unlock()
	m.stop()
	m.paths.stop()
	m.wg.Wait()
	return errors.Join(errs...)
}

// enter registers work that Close (and Drain) must wait for; it fails
// once Close began. leave ends it.
func (m *Manager) enter() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.wg.Add(1)
	m.work.add()
	return true
}

// leave ends work that enter registered.
func (m *Manager) leave() {
	m.work.done()
	m.wg.Done()
}

// limiter bounds a portal's open connections.
type limiter chan struct{}

func (l limiter) acquire() bool {
	select {
	case l <- struct{}{}:
		return true
	default:
		return false
	}
}

func (l limiter) release() { <-l }

// outlet is a configured outlet.
type outlet struct {
	spec  OutletSpec
	allow *policy.Policy
	ctx   context.Context
	stop  context.CancelFunc
	lim   limiter
	stats Counters
}

// AddOutlet creates an outlet.
func (m *Manager) AddOutlet(spec OutletSpec) (OutletInfo, error) {
	allow, err := spec.check()
	if err != nil {
		return OutletInfo{}, fmt.Errorf("create outlet: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.draining {
		return OutletInfo{}, fmt.Errorf("create outlet %q: %w", spec.Name, ErrClosed)
	}
	if _, ok := m.outlets[spec.Name]; ok {
		return OutletInfo{}, fmt.Errorf("create outlet %q: %w", spec.Name, ErrExists)
	}
	ctx, stop := context.WithCancel(m.ctx)
	o := &outlet{spec: spec, allow: allow, ctx: ctx, stop: stop, lim: make(limiter, m.opts.MaxConns)}
	m.outlets[spec.Name] = o
	return OutletInfo{OutletSpec: spec}, nil
}

// RemoveOutlet deletes an outlet and closes its connections.
func (m *Manager) RemoveOutlet(name string) error {
	m.mu.Lock()
	o, ok := m.outlets[name]
	delete(m.outlets, name)
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("delete outlet %q: %w", name, ErrNotFound)
	}
	o.stop()
	return nil
}

// Outlets lists the outlets by name.
func (m *Manager) Outlets() []OutletInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]OutletInfo, 0, len(m.outlets))
	for _, o := range m.outlets {
		out = append(out, OutletInfo{OutletSpec: o.spec, Counters: o.stats.Snapshot()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Inlets lists the inlets by name.
func (m *Manager) Inlets() []InletInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]InletInfo, 0, len(m.inlets))
	for _, in := range m.inlets {
		out = append(out, in.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// outletFor picks the outlet an inlet asked for by name (TLS SNI). An empty
// name picks the only outlet.
func (m *Manager) outletFor(name string) (*outlet, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if name != "" {
		if o := m.outlets[name]; o != nil {
			return o, nil
		}
		return nil, fmt.Errorf("find outlet %q: %w", name, channel.ErrNoOutlet)
	}
	if len(m.outlets) == 1 {
		for _, o := range m.outlets {
			return o, nil
		}
	}
	return nil, fmt.Errorf("find outlet: this agent has %d outlets; name one with the inlet's --outlet: %w", len(m.outlets), channel.ErrNoOutlet)
}
