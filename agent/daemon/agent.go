package daemon

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/channel"
	"github.com/sluicehq/sluice/agent/credential"
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
	// WarmIdle is how long a channel stays warm for an inlet's next
	// connection (0: the portal package's default, 30s; negative: never).
	WarmIdle time.Duration
}

// Agent is a running agent.
type Agent struct {
	dir  string
	log  *zap.Logger
	id   *identity.Identity
	lock *stateLock // held for the agent's life
	enr  enrollment
	// enrolled: the state directory held an enrollment at start;
	// ticketID: the ticket this start redeems (or found spent), if any.
	enrolled bool
	ticketID string
	keys     channel.Keys
	client   *relay.Client
	ports    *portal.Manager
	direct   *net.TCPListener // nil without --direct-listen
	cancel   context.CancelFunc
	cred     atomic.Pointer[credential.Credential]

	members credential.Members // the authority's word on each node, as the hub sent it
	dirtyMu sync.Mutex         // guards dirty
	dirty   []string           // nodes whose word changed, for reviewLoop
	kick    chan struct{}      // wakes reviewLoop

	planMu sync.RWMutex // guards plan; held while resetting disallowed connections
	plan   *plan        // what the maps hold; nil until first written

	failMu sync.Mutex          // guards failed
	failed map[string]*failure // saved inlets and outlets that did not start (restore.go)

	mu           sync.Mutex // guards the following and serializes configuration changes
	cfg          config
	kern         kernel // nil when the data path is not running
	kernReason   string // why kern is nil
	workloads    []Workload
	workloadNums map[string]uint32 // workload name -> number in the kernel
	nextWorkload uint32
	portalNums   map[string]uint32         // transparent inlet name -> portal number
	adopted      map[netip.AddrPort]uint32 // pinned portal numbers not yet taken back (see assignPortalLocked)
	unresolved   []string                  // workload selectors not resolved at the last sync
	cgroups      map[string]string         // cgroup workload dir -> its resolution at the last sync
	suspects     map[string]map[int]bool   // address workload -> interfaces that existed when its bound one vanished
	unbound      map[string]string         // address workload -> why it is bound to no interface now
	ifaces       map[int]bool              // the host's interfaces at the last sync; nil before the first
	hostAddrs    []netip.Addr              // the host's addresses at the last sync, for explicit inlets on 0.0.0.0

	resolveCgroup func(dir string) ([]int, error) // cgroupVeths; tests replace it
	sys           system                          // what the agent reads of the host; tests replace it
	loops         sync.WaitGroup                  // goroutines Close waits for
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
	a := &Agent{lock: lock, dir: opts.StateDir, log: opts.Logger, workloadNums: map[string]uint32{}, portalNums: map[string]uint32{},
		suspects: map[string]map[int]bool{}, unbound: map[string]string{},
		kick: make(chan struct{}, 1), resolveCgroup: cgroupVeths, sys: hostSystem}
	id, created, err := identity.LoadOrCreate(opts.StateDir)
	if err != nil {
		return nil, err
	}
	a.id = id
	if created {
		a.log.Info("created node identity", zap.String("node", id.ID()), zap.String("state_dir", opts.StateDir))
	}
	ticket, err := a.loadEnrollment(opts.Ticket)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	newClient := func(ticket string) (*relay.Client, error) {
		return relay.NewClient(relay.ClientOptions{
			Hub:          a.enr.Hub,
			Identity:     id,
			AuthorityKey: a.enr.AuthorityKey,
			Ticket:       ticket,
			Logger:       a.log.Named("hub"),
			OnIncoming:   func(in relay.Incoming) { a.ports.HandleIncoming(in.Token, in.From) },
			OnMember:     a.onMember,
			OnGrant: func(g relay.Grant) {
				if err := a.install(g); err != nil {
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
	if a.ticketSpent(ticket, err) {
		g, err = a.startAsMember(startCtx, err, newClient)
	}
	switch {
	case err == nil:
		err = a.firstGrant(g)
	case a.mayStartOffline(ctx, ticket, err):
		g, err = a.savedGrant(err)
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
	a.ports = portal.New(portal.Options{
		Hub:      a.client,
		Keys:     &a.keys,
		Verifier: &credential.Verifier{Root: root, ProjectID: a.enr.Project, Current: a.members.Current},
		Logger:   a.log.Named("portal"),
		MaxConns: opts.MaxConns,
		WarmIdle: opts.WarmIdle,
		Local:    a.admitLocal,
		// Connections that outlive their channel's credential go on only
		// while the member state is current (docs/members.md).
		MemberStateCurrent: func() bool { return !a.client.Status().Stale },
	})
	if err := a.startDatapath(opts); err != nil {
		a.Close()
		return nil, err
	}
	if err := a.listenDirect(runCtx, opts.DirectListen); err != nil {
		a.Close()
		return nil, err
	}
	if err := errors.Join(a.loadWorkloads(), a.restore(ctx)); err != nil {
		a.Close()
		return nil, err
	}
	a.mu.Lock()
	err = a.syncLocked()
	a.mu.Unlock()
	if err != nil {
		a.Close()
		return nil, err
	}
	// Updates that came with the first credential (revoked nodes) wait in
	// members: they are applied before Start returns, the later ones by
	// the loop as they come.
	select {
	case <-a.kick:
		a.reviewPending()
	default:
	}
	go a.reviewLoop(runCtx)
	a.loops.Add(1)
	go func() {
		defer a.loops.Done()
		a.retryLoop(runCtx)
	}()
	a.loops.Add(1)
	go func() {
		defer a.loops.Done()
		a.cgroupLoop(runCtx)
	}()
	return a, nil
}

// mayStartOffline reports whether an enrolled agent that could not reach the
// hub should start anyway: not when enrolling, not when the hub refused it.
// A ticket an enrolled agent meant to redeem waits for its next start.
func (a *Agent) mayStartOffline(ctx context.Context, ticket string, err error) bool {
	var refused *relay.HubError
	ok := a.enrolled && ctx.Err() == nil && !errors.As(err, &refused) && !errors.Is(err, relay.ErrHubUntrusted)
	if ok && ticket != "" {
		a.log.Warn("hub unreachable: --ticket not redeemed; it will be at the next start with the hub reachable", zap.String("ticket", a.ticketID))
		a.ticketID = ""
	}
	return ok
}

// savedGrant rebuilds the last grant from the state directory, so that an
// agent can start while the hub is unreachable.
func (a *Agent) savedGrant(cause error) (relay.Grant, error) {
	creds, err1 := credential.ReadPEMFile(filepath.Join(a.dir, credentialFile))
	roots, err2 := credential.ReadPEMFile(filepath.Join(a.dir, authorityFile))
	if err := errors.Join(err1, err2); err != nil {
		return relay.Grant{}, fmt.Errorf("%w (and no saved credential to start with: %w)", cause, err)
	}
	g := relay.Grant{Credential: creds[0].Raw, Authority: roots[0].Raw, Project: a.enr.Project, Node: a.id.ID()}
	if err := a.install(g); err != nil {
		return relay.Grant{}, fmt.Errorf("%w (and the saved credential is unusable: %w)", cause, err)
	}
	a.log.Warn("hub unreachable; starting with the saved credential and retrying in the background",
		zap.Error(cause), zap.Time("credential_expires", creds[0].NotAfter))
	return g, nil
}

// firstGrant records the enrollment and installs the first credential.
func (a *Agent) firstGrant(g relay.Grant) error {
	if g.Project != a.enr.Project {
		return fmt.Errorf("start agent: hub serves project %s, want %s", g.Project, a.enr.Project)
	}
	a.rememberTicket()
	if err := writeJSON(filepath.Join(a.dir, enrollmentFile), a.enr); err != nil {
		return err
	}
	if err := identity.WriteFileAtomic(filepath.Join(a.dir, authorityFile), credential.EncodePEM(g.Authority), 0o644); err != nil {
		return err
	}
	return a.install(g)
}

// install makes a granted credential current and saves it.
func (a *Agent) install(g relay.Grant) error {
	cert, cred, err := tlsCertificate(g.Credential, a.id.PrivateKey())
	if err != nil {
		return err
	}
	if cred.NodeID != a.id.ID() {
		return fmt.Errorf("install credential: it names node %s, this is %s", cred.NodeID, a.id.ID())
	}
	a.keys.Set(cert)
	a.cred.Store(cred)
	a.log.Info("credential installed", zap.Time("expires", cred.Expires()), zap.Any("attributes", cred.Attributes))
	return identity.WriteFileAtomic(filepath.Join(a.dir, credentialFile), credential.EncodePEM(g.Credential), 0o600)
}

func (a *Agent) saveLocked() error {
	return writeJSON(filepath.Join(a.dir, portalsFile), a.cfg)
}

// Close stops the data path's listener, the portals and the hub link. The
// data path's pins stay, so the kernel keeps refusing transparent
// connections while no agent runs.
func (a *Agent) Close() error {
	a.mu.Lock()
	k := a.kern
	a.kern = nil
	a.mu.Unlock()
	var err error
	if k != nil {
		err = k.Close()
	}
	err = errors.Join(err, a.ports.Close())
	a.cancel()
	if a.direct != nil {
		a.direct.Close()
	}
	a.loops.Wait()
	a.lock.Close()
	return err
}

// listenDirect accepts channels from inlets on addr ("" for none) until ctx
// ends.
func (a *Agent) listenDirect(ctx context.Context, addr string) error {
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
		for {
			c, err := a.direct.AcceptTCP()
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
					a.log.Error("direct listener stopped", zap.Error(err))
				}
				return
			}
			go a.ports.ServeDirect(c)
		}
	}()
	a.log.Info("accepting direct channels", zap.Stringer("listen", ln.Addr()))
	return nil
}

// CreateRelay claims a relay name at the hub.
func (a *Agent) CreateRelay(ctx context.Context, name string) error {
	if err := wire.CheckRelayName(name); err != nil {
		return fmt.Errorf("create relay: %w: %w", err, portal.ErrInvalid)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := a.client.Claim(cctx, name); err != nil {
		return err
	}
	if !slices.Contains(a.cfg.Relays, name) {
		a.cfg.Relays = append(a.cfg.Relays, name)
	}
	return a.saveLocked()
}

// DeleteRelay gives a relay name up.
func (a *Agent) DeleteRelay(ctx context.Context, name string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	i := slices.Index(a.cfg.Relays, name)
	if i < 0 {
		return fmt.Errorf("delete relay %q: %w", name, portal.ErrNotFound)
	}
	a.cfg.Relays = slices.Delete(a.cfg.Relays, i, i+1)
	err := a.client.Release(ctx, name)
	return errors.Join(err, a.saveLocked())
}
