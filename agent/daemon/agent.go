package daemon

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/capture"
	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/flowlog"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/portal"
	"github.com/sluicehq/sluice/agent/relay"
	"github.com/sluicehq/sluice/agent/wire"
)

// Options configure an agent. StateDir is required.
type Options struct {
	StateDir string
	Ticket   string      // encoded enrollment ticket; needed only the first time
	Logger   *zap.Logger // zap.NewNop()
	// Datapath is DatapathAuto (""), DatapathOn or DatapathOff: whether to
	// load the BPF data path that transparent inlets need.
	Datapath string
	BPFDir   string   // loader.DefaultPinDir (/sys/fs/bpf/sluice)
	Bridges  []string // bridges to follow; none = every bridge
	// Routed are name patterns of routed veths to follow (pods' host-side
	// veths on no bridge, as Calico's "cali*"); none = no routed veth.
	Routed []string
	// Accelerate is DatapathAuto (""), DatapathOn or DatapathOff: socket
	// acceleration of transparent inlets (see docs/datapath.md).
	Accelerate string
	// DirectListen, if set, is a HOST:PORT where the agent also accepts
	// portal channels straight from inlets (tcp-inlet --direct), without
	// the hub. It exposes a listening port; the channel still requires a
	// project credential and the outlet's policy.
	DirectListen string
	// MaxConns bounds the open connections of each portal (0: the portal
	// package's default, 4096).
	MaxConns int
	// FlowLogSize is how many recent events the flow log keeps for
	// `agentctl observe --last` (0: flowlog.DefaultRing).
	FlowLogSize int
	// WarmIdle is how long a channel stays warm for an inlet's next
	// connection (0: the portal package's default, 30s; negative: never).
	WarmIdle time.Duration
	// Timings, if set, receives the portals' setup and handshake times
	// (the agent's metrics).
	Timings portal.Timings
	// DirectPaths lets channels go straight to the peer agent when the hub
	// coordinates a direct path (agent run --direct-paths auto; off: every
	// channel through the hub; docs/direct-paths.md).
	DirectPaths bool
}

// Agent is a running agent: the wiring of its parts, and the local API's
// backend, whose methods delegate to them.
//
//	credentials   enrollment and credentials: identity, enrollment,
//	              credential install and renewal, keys (enroll.go)
//	configStore   the operator's configuration, and the saved items that
//	              did not start (config.go, restore.go)
//	datapath      the data path controller: kernel, plan, workloads,
//	              portal numbers, the host as last seen (datapath.go,
//	              local.go, workloads.go)
//	reviewer      the member reviewer: the authority's word on each node,
//	              applied to portals and maps (members.go)
//	portal.Manager  the one registry of running portals, both accept loops,
//	              incoming data sessions from the hub
//	relay.Client  the link to the hub
//
// Lock order, where two parts' locks are held together: configStore.mu
// (held for a whole configuration change), then datapath.mu, then
// datapath.planMu, then the portal Manager's locks. configStore.failMu and
// reviewer.dirtyMu come last: nothing is locked while they are held. No
// part calls another's method while holding a lock that comes later in
// this order. Agent has no lock of its own: its fields are set in Start
// and only read after.
type Agent struct {
	log    *zap.Logger
	lock   *stateLock // held for the agent's life
	creds  *credentials
	conf   *configStore
	dp     *datapath
	rev    *reviewer
	client *relay.Client
	ports  *portal.Manager
	flows  *flowlog.Log     // the flow log (agentctl observe)
	direct *net.TCPListener // nil without --direct-listen
	taps   capture.Taps     // agentctl capture (capture.go)
	cancel context.CancelFunc
	loops  sync.WaitGroup // goroutines Close waits for
	holds  holds          // what keeps it from being ready besides its own state (holds.go)
}

// Start loads or creates the identity, enrolls with the ticket (or says hello
// as an existing member), and restores the saved portals.
func Start(ctx context.Context, opts Options) (_ *Agent, err error) {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	lock, err := lockStateDir(opts.StateDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			lock.Close()
		}
	}()
	a := &Agent{lock: lock, log: opts.Logger, conf: newConfigStore(opts.StateDir, opts.Logger)}
	id, created, err := identity.LoadOrCreate(opts.StateDir)
	if err != nil {
		return nil, err
	}
	cr := &credentials{dir: opts.StateDir, log: opts.Logger, id: id}
	a.creds = cr
	a.rev = newReviewer(id.ID(), a.log)
	if created {
		a.log.Info("created node identity", zap.String("node", id.ID()), zap.String("state_dir", opts.StateDir))
	}
	ticket, err := cr.loadEnrollment(opts.Ticket)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	// The client delivers the data sessions the hub announces straight to
	// the portal Manager. The Manager needs the client and the authority
	// the first grant brings, so it is made once the client started;
	// ports holds it from then on.
	var ports atomic.Pointer[portal.Manager]
	newClient := func(ticket string) (*relay.Client, error) {
		return relay.NewClient(relay.ClientOptions{
			Hub:          cr.enr.Hub,
			Hubs:         cr.enr.Hubs,
			Identity:     id,
			AuthorityKey: cr.enr.AuthorityKey,
			Ticket:       ticket,
			Logger:       a.log.Named("hub"),
			Direct:       opts.DirectPaths,
			OnIncoming: func(in relay.Incoming) {
				if m := ports.Load(); m != nil {
					m.HandleSession(in)
					return
				}
				a.log.Debug("data session announced before the portals started; not served", zap.String("relay", in.Relay), zap.String("from", in.From))
			},
			OnGoingAway: func(hub string) {
				if m := ports.Load(); m != nil {
					m.HubGoingAway(hub)
				}
			},
			OnMember: a.rev.onMember,
			OnGrant: func(g relay.Grant) {
				if err := cr.install(g); err != nil {
					a.log.Error("installing renewed credential failed", zap.Error(err))
				}
			},
		})
	}
	if a.client, err = newClient(ticket); err != nil {
		cancel()
		return nil, err
	}
	// The first connection is made with the caller's context so that Ctrl-C
	// or a refusal ends start-up at once.
	startCtx, stop := context.WithCancel(runCtx)
	defer context.AfterFunc(ctx, stop)()
	g, err := a.client.Start(startCtx)
	if cr.ticketSpent(ticket, err) {
		var c *relay.Client
		c, g, err = cr.startAsMember(startCtx, err, newClient)
		if c != nil {
			a.client = c
		}
	}
	switch {
	case err == nil:
		err = cr.firstGrant(g)
	case cr.mayStartOffline(ctx, ticket, err):
		g, err = cr.savedGrant(err)
		if err == nil {
			a.client.StartOffline(runCtx)
		}
	}
	if err != nil {
		cancel()
		return nil, err
	}
	root, err := x509.ParseCertificate(g.Authority)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("start agent: the hub sent an unreadable authority certificate: %w", err)
	}
	a.dp = newDatapath(opts.StateDir, a.log, nil, a.rev.peerDenied)
	a.flows = flowlog.New(opts.FlowLogSize)
	a.dp.flows = a.flows
	a.ports = portal.New(portal.Options{
		Flows:        a.flows,
		WorkloadName: a.dp.workloadName,
		Hub:          a.client,
		Keys:         &cr.keys,
		Verifier:     &credential.Verifier{Root: root, ProjectID: cr.enr.Project, Current: a.rev.members.Current},
		Logger:       a.log.Named("portal"),
		MaxConns:     opts.MaxConns,
		WarmIdle:     opts.WarmIdle,
		Timings:      opts.Timings,
		Local:        a.dp.admitLocal,
		// Connections that outlive their channel's credential go on only
		// while the member state is current (docs/members.md).
		MemberStateCurrent: func() bool { return !a.client.Status().Stale },
		Taps:               &a.taps,
		Direct:             opts.DirectPaths,
	})
	ports.Store(a.ports)
	a.dp.ports, a.rev.ports, a.rev.sync = a.ports, a.ports, a.dp.sync
	if err := a.dp.start(opts); err != nil {
		a.Close()
		return nil, err
	}
	if err := a.listenDirect(opts.DirectListen); err != nil {
		a.Close()
		return nil, err
	}
	if err := errors.Join(a.dp.loadWorkloads(), a.restore(ctx)); err != nil {
		a.Close()
		return nil, err
	}
	if err := a.dp.sync(); err != nil {
		a.Close()
		return nil, err
	}
	// Updates that came with the first credential (revoked nodes) wait in
	// members: they are applied before Start returns, the later ones by
	// the loop as they come.
	select {
	case <-a.rev.kick:
		a.rev.reviewPending()
	default:
	}
	go a.rev.reviewLoop(runCtx)
	a.loops.Add(1)
	go func() {
		defer a.loops.Done()
		a.retryLoop(runCtx)
	}()
	a.loops.Add(1)
	go func() {
		defer a.loops.Done()
		a.dp.cgroupLoop(runCtx)
	}()
	return a, nil
}

// Close stops the data path's listener, the portals and the hub link. The
// data path's pins stay, so the kernel keeps refusing transparent
// connections while no agent runs.
func (a *Agent) Close() error {
	err := errors.Join(a.dp.close(), a.ports.Close())
	a.cancel()
	if a.direct != nil {
		a.direct.Close()
	}
	a.loops.Wait()
	a.lock.Close()
	return err
}

// listenDirect opens the listener for direct channels from inlets on addr
// ("" for none); the portals accept on it until Close or Drain closes it.
func (a *Agent) listenDirect(addr string) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for direct channels: %w", err)
	}
	a.direct = ln.(*net.TCPListener)
	a.loops.Add(1)
	go func() {
		defer a.loops.Done()
		a.ports.AcceptDirect(a.direct)
	}()
	a.log.Info("accepting direct channels", zap.Stringer("listen", ln.Addr()))
	return nil
}

// CreateRelay claims a relay name at the hub.
func (a *Agent) CreateRelay(ctx context.Context, name string) error {
	if err := wire.CheckRelayName(name); err != nil {
		return fmt.Errorf("create relay: %w: %w", err, ErrInvalidRelayName)
	}
	a.conf.mu.Lock()
	defer a.conf.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := a.client.Claim(cctx, name); err != nil {
		return err
	}
	if !slices.Contains(a.conf.cfg.Relays, name) {
		a.conf.cfg.Relays = append(a.conf.cfg.Relays, name)
	}
	return a.conf.saveLocked()
}

// DeleteRelay gives a relay name up.
func (a *Agent) DeleteRelay(ctx context.Context, name string) error {
	a.conf.mu.Lock()
	defer a.conf.mu.Unlock()
	i := slices.Index(a.conf.cfg.Relays, name)
	if i < 0 {
		return fmt.Errorf("delete relay %q: %w", name, portal.ErrNotFound)
	}
	a.conf.cfg.Relays = slices.Delete(a.conf.cfg.Relays, i, i+1)
	err := a.client.Release(ctx, name)
	return errors.Join(err, a.conf.saveLocked())
}
