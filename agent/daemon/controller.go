package daemon

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/flowlog"
	"github.com/sluicehq/sluice/agent/policy"
	"github.com/sluicehq/sluice/agent/portal"
)

// datapath is the data path controller. It owns the BPF data path (the
// kernel, or why it is not running), the local workloads (workloads.json)
// and their numbers, the portal numbers (which it picks, adopting the ones
// the pinned maps kept, and records in the portal registry), what the
// agent last saw of the host (cgroups, bindings, interfaces, addresses),
// and the plan: what the maps hold, from which it admits the connections
// the transparent listener and explicit inlets with --allow-local accept.
//
// Lock order: the configuration store's mu (a configuration change), then
// mu, then planMu, then the portal Manager's locks. Nothing holds mu while
// it waits for the configuration store.
type datapath struct {
	dir   string // the state directory, for workloads.json
	log   *zap.Logger
	ports *portal.Manager // the portal registry: running inlets and their portal numbers
	// peerDenied is the member reviewer's word on an inlet's peer.
	peerDenied func(node string, allow *policy.Policy) bool

	planMu sync.RWMutex // guards plan; held while resetting disallowed connections
	plan   *plan        // what the maps hold; nil until first written

	mu           sync.Mutex            // guards the following and serializes data path changes
	kern         kernel                // nil when the data path is not running
	kernReason   string                // why kern is nil
	workloads    []Workload            // the operator's, then the sourced ones (sourced.go)
	sourced      map[string][]Workload // source -> the whole set it keeps
	hidden       map[string]string     // sourced workload -> the operator's workload that hides it
	workloadNums map[string]uint32     // workload name -> number in the kernel
	nextWorkload uint32
	adopted      map[netip.AddrPort]uint32 // pinned portal numbers not yet taken back (see assignPortalLocked)
	unresolved   []string                  // workload selectors not resolved at the last sync
	cgroups      map[string]string         // cgroup workload dir -> its resolution at the last sync
	suspects     map[string]map[int]bool   // address workload -> interfaces that existed when its bound one vanished
	unbound      map[string]string         // address workload -> why it is bound to no interface now
	ifaces       map[int]bool              // the host's interfaces at the last sync; nil before the first
	hostAddrs    []netip.Addr              // the host's addresses at the last sync, for explicit inlets on 0.0.0.0

	names workloadNames // workload numbers to names, for the flow log (flows.go)
	flows *flowlog.Log  // the flow log, for the kernel's refusals (nil: none)

	resolveCgroup func(dir string) ([]int, error) // cgroupVeths; tests replace it
	sys           system                          // what the agent reads of the host; tests replace it
}

// newDatapath makes a data path controller without a kernel; start opens it.
func newDatapath(dir string, log *zap.Logger, ports *portal.Manager, peerDenied func(string, *policy.Policy) bool) *datapath {
	return &datapath{dir: dir, log: log, ports: ports, peerDenied: peerDenied, workloadNums: map[string]uint32{},
		suspects: map[string]map[int]bool{}, unbound: map[string]string{}, resolveCgroup: cgroupVeths, sys: hostSystem}
}

// start opens the BPF data path as opts.Datapath asks.
func (d *datapath) start(opts Options) error {
	switch opts.Datapath {
	case "", DatapathAuto, DatapathOn:
	case DatapathOff:
		d.kernReason = "turned off (--datapath off)"
		return nil
	default:
		return fmt.Errorf("start data path: --datapath %q: want auto, on or off", opts.Datapath)
	}
	k, err := openKernel(kernelOptions{PinDir: opts.BPFDir, Bridges: opts.Bridges, Routed: opts.Routed, Accelerate: opts.Accelerate, Log: d.log.Named("datapath"),
		RequirePersistentPins: opts.Datapath == DatapathOn, Accept: d.accept, Refresh: d.refresh, Refused: d.refused})
	if err != nil {
		if opts.Datapath == DatapathOn {
			return fmt.Errorf("start data path: %w", err)
		}
		d.kernReason = err.Error()
		d.log.Warn("BPF data path unavailable: transparent inlets are unavailable, explicit inlets still work", zap.Error(err))
		return nil
	}
	d.mu.Lock()
	d.kern = k
	d.adopted = k.pinned()
	d.mu.Unlock()
	return nil
}

// accept runs the portals' accept loop on the transparent listener.
func (d *datapath) accept(ln *net.TCPListener, accepted func(*net.TCPConn) uint32) {
	d.ports.AcceptTransparent(ln, func(c *net.TCPConn, serve func(uint32)) error {
		return d.admitTransparent(c, accepted(c), serve)
	})
}

// admitTransparent lets a connection from the transparent listener reach
// the portals, unless the current policy no longer allows its workload:
// serve runs while the plan cannot change, so that a policy change that
// follows resets it.
func (d *datapath) admitTransparent(c *net.TCPConn, workload uint32, serve func(uint32)) error {
	d.planMu.RLock()
	defer d.planMu.RUnlock()
	if p := d.plan; p != nil {
		local := c.LocalAddr().(*net.TCPAddr).AddrPort()
		local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
		if n, ok := p.Services[local]; ok && !p.allows(workload, n) {
			return fmt.Errorf("workload %d may not reach portal %d: %w", workload, n, ErrLocalDenied)
		}
	}
	serve(workload)
	return nil
}

// close stops the data path's listener (the pins stay).
func (d *datapath) close() error {
	d.mu.Lock()
	k := d.kern
	d.kern = nil
	d.mu.Unlock()
	if k == nil {
		return nil
	}
	return k.Close()
}

// stopAccepting closes the transparent listener (Drain).
func (d *datapath) stopAccepting() error {
	d.mu.Lock()
	k := d.kern
	d.mu.Unlock()
	if s, ok := k.(interface{ stopAccepting() error }); ok {
		return s.stopAccepting()
	}
	return nil
}

// startInlet starts an inlet in the portal registry and gives it its
// portal number in the data path, without saving it.
func (d *datapath) startInlet(spec portal.InletSpec) (portal.InletInfo, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !spec.Transparent && spec.AllowLocal != "" && d.kern == nil {
		if err := spec.Check(); err != nil {
			return portal.InletInfo{}, fmt.Errorf("create inlet: %w", err)
		}
		return portal.InletInfo{}, d.explicitLocked(spec) // says why, before anything listens
	}
	info, err := d.ports.AddInlet(spec)
	if err != nil {
		return info, err
	}
	switch {
	case spec.Transparent:
		err = d.transparentLocked(spec)
	case spec.AllowLocal != "":
		err = d.explicitLocked(spec)
	}
	if err != nil {
		d.ports.RemoveInlet(spec.Name)
		return portal.InletInfo{}, err
	}
	return info, nil
}

// transparentLocked gives a new transparent inlet its portal number, if the
// data path runs.
func (d *datapath) transparentLocked(spec portal.InletSpec) error {
	if d.kern == nil {
		return fmt.Errorf("create inlet %q: transparent inlets need the BPF data path, which is not running on this agent (%s); explicit inlets still work: %w",
			spec.Name, d.kernReason, ErrNoDatapath)
	}
	svc, err := portal.ServiceAddr(spec.From)
	if err != nil {
		return fmt.Errorf("create inlet %q: %w", spec.Name, err)
	}
	_, err = d.assignPortalLocked(spec.Name, svc)
	return err
}

// status reports the BPF data path's state.
func (d *datapath) status() DatapathStatus {
	d.mu.Lock()
	k := d.kern
	st := DatapathStatus{Enabled: k != nil, Reason: d.kernReason}
	for _, p := range d.ports.Portals() {
		kind := "transparent"
		if !p.Spec.Transparent {
			kind = "explicit"
		}
		st.Portals = append(st.Portals, PortalStatus{Inlet: p.Spec.Name, Kind: kind, Service: p.Spec.From, Portal: p.Number})
	}
	d.mu.Unlock()
	if k != nil {
		k.status(&st)
	}
	return st
}

// running reports whether the data path runs, and why not.
func (d *datapath) running() (bool, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.kern != nil, d.kernReason
}

// Datapath reports the BPF data path's state.
func (a *Agent) Datapath() DatapathStatus { return a.dp.status() }
