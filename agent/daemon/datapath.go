package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/policy"
	"github.com/sluicehq/sluice/agent/portal"
	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/maps"
)

// Values of Options.Datapath.
const (
	DatapathAuto = "auto" // use the BPF data path if the kernel can run it
	DatapathOn   = "on"   // fail to start without it
	DatapathOff  = "off"  // never load it
)

// cgroupRefresh is how often workloads named by cgroup are resolved again.
const cgroupRefresh = 2 * time.Second

// maxPortal is the highest portal number the kernel's counters map holds
// (portal 0 is none).
const maxPortal = loader.MaxPortals - 1

// ErrNoDatapath means a transparent inlet was asked of an agent whose BPF
// data path is not running.
var ErrNoDatapath = errors.New("the BPF data path is not running on this agent")

// DatapathStatus is what `agentctl datapath status` shows.
type DatapathStatus struct {
	Enabled bool   `json:"enabled"`
	Reason  string `json:"reason,omitempty"` // why not enabled
	PinDir  string `json:"pin_dir,omitempty"`
	// Pins says whether the pins outlive the agent (fail closed holds only
	// if they do), and why.
	Pins     *loader.Pins `json:"pins,omitempty"`
	Listener string       `json:"listener,omitempty"` // the transparent listener
	// Acceleration is "on", or "off" and why; Accelerated counts the
	// connections whose agent-to-app bytes skipped TCP.
	Acceleration string              `json:"acceleration,omitempty"`
	Accelerated  uint64              `json:"accelerated_connections"`
	Attachments  []loader.Attachment `json:"attachments"`
	Maps         []maps.Size         `json:"maps"`
	Portals      []PortalStatus      `json:"portals"`
	Error        string              `json:"error,omitempty"` // reading the kernel's state failed
}

// PortalStatus is an inlet with a portal number (transparent, or explicit
// with --allow-local) as the kernel sees it.
type PortalStatus struct {
	Inlet    string              `json:"inlet"`
	Kind     string              `json:"kind"`    // "transparent" or "explicit"
	Service  string              `json:"service"` // the service address, or the explicit inlet's --from
	Portal   uint32              `json:"portal"`
	Counters maps.PortalCounters `json:"counters"`
}

// kernel is the running BPF data path (datapath_linux.go).
type kernel interface {
	apply(p plan) error
	// pinned is the portal numbers the pinned maps gave services before
	// this agent started, so that a restart keeps their kernel counters.
	pinned() map[netip.AddrPort]uint32
	resetCounters(portal uint32) error
	// takeFlow returns and forgets the workload the steer program recorded
	// for the connection src->dst; ok is false if it recorded none.
	takeFlow(src, dst netip.AddrPort) (workload uint32, ok bool, err error)
	status(st *DatapathStatus) // fills in what only the kernel knows
	Close() error
}

// kernelOptions configure openKernel.
type kernelOptions struct {
	PinDir     string // loader.DefaultPinDir
	Bridges    []string
	Routed     []string // name patterns of routed veths (loader.Devices)
	Accelerate string   // DatapathAuto, DatapathOn or DatapathOff
	// RequirePersistentPins refuses pins that would not outlive the agent
	// (--datapath on).
	RequirePersistentPins bool
	Log                   *zap.Logger
	// Accept runs the accept loop of the transparent listener ln
	// (portal.Manager.AcceptTransparent) until ln is closed; accepted
	// returns the workload the kernel recorded for a connection accepted
	// on it (and pairs it for acceleration).
	Accept  func(ln *net.TCPListener, accepted func(c *net.TCPConn) (workload uint32))
	Refresh func() // devices changed
	// Refused is called, from one goroutine, with every connection the
	// kernel refused, as the refusals ring reports it.
	Refused func(maps.Refusal)
}

// refresh re-resolves workload interfaces after devices changed.
func (d *datapath) refresh() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.syncLocked(); err != nil {
		d.log.Error("updating the data path after a device change failed", zap.Error(err))
	}
}

// sync writes the maps (syncLocked).
func (d *datapath) sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.syncLocked()
}

// syncLocked writes the maps from the configuration, then resets the open
// connections that the configuration no longer allows.
func (d *datapath) syncLocked() error {
	if d.kern == nil {
		return nil
	}
	d.followBindingsLocked()
	var inlets []planInlet
	names := map[uint32]string{}
	for _, pi := range d.ports.Portals() {
		s, n := pi.Spec, pi.Number
		allow, err := policy.Parse(s.AllowLocal)
		if err != nil {
			continue
		}
		in := planInlet{Name: s.Name, Portal: n, AllowLocal: allow, Explicit: !s.Transparent}
		if s.Transparent {
			if in.Service, err = portal.ServiceAddr(s.From); err != nil {
				continue
			}
		} else if in.Listen, err = d.listenAddrsLocked(s.From); err != nil {
			d.log.Warn("explicit inlet: cannot list the host addresses it listens on; connections through them are checked in the agent only",
				zap.String("inlet", s.Name), zap.Error(err))
		}
		peerAllow, err := policy.Parse(s.Allow)
		in.Denied = err != nil || d.peerDenied(pi.Peer, peerAllow)
		inlets = append(inlets, in)
		names[n] = s.Name
	}
	ws := make([]planWorkload, 0, len(d.workloads))
	for _, w := range d.workloads {
		ws = append(ws, planWorkload{Workload: w, Number: d.workloadNums[w.Name], Unbound: d.unbound[w.Name]})
	}
	d.cgroups = map[string]string{}
	p := computePlan(inlets, ws, resolvers{Ifindex: interfaceIndex, Cgroup: d.resolveCgroupLocked})
	for _, u := range p.Unresolved {
		if !slices.Contains(d.unresolved, u) {
			d.log.Warn("workload not resolved; it is unknown to the kernel until it is", zap.String("selector", u))
		}
	}
	d.unresolved = p.Unresolved
	if err := d.kern.apply(p); err != nil {
		return fmt.Errorf("update data path maps: %w", err)
	}
	d.planMu.Lock()
	defer d.planMu.Unlock()
	d.plan = &p
	for n, name := range names {
		if k := d.ports.CloseConns(name, func(c portal.ConnInfo) bool { return p.allows(c.Workload, n) }); k > 0 {
			d.log.Info("reset connections the policy no longer allows", zap.String("inlet", name), zap.Int("connections", k))
		}
	}
	return nil
}

// resolveCgroupLocked resolves a workload's cgroup and records the result
// for refreshCgroups to compare with.
func (d *datapath) resolveCgroupLocked(dir string) ([]int, error) {
	idx, err := d.resolveCgroup(dir)
	d.cgroups[dir] = cgroupResult(idx, err)
	return idx, err
}

// cgroupResult is a cgroup's resolution as a comparable string.
func cgroupResult(idx []int, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	return fmt.Sprint(idx)
}

// cgroupLoop re-resolves the cgroup workloads, the unbound address
// workloads and the host addresses of explicit inlets on 0.0.0.0 every
// cgroupRefresh until ctx ends: processes enter and leave cgroups, and
// addresses come and go inside containers, without a link event.
func (d *datapath) cgroupLoop(ctx context.Context) {
	t := time.NewTicker(cgroupRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.refreshCgroups()
			d.refreshHost()
		}
	}
}

// refreshCgroups resolves the cgroup workloads again and rewrites the
// maps if any resolution changed since the last sync.
func (d *datapath) refreshCgroups() {
	d.mu.Lock()
	var dirs []string
	for _, w := range d.workloads {
		if w.Cgroup != "" && d.kern != nil {
			dirs = append(dirs, w.Cgroup)
		}
	}
	resolve := d.resolveCgroup
	d.mu.Unlock()
	if len(dirs) == 0 {
		return
	}
	now := map[string]string{}
	for _, dir := range dirs {
		now[dir] = cgroupResult(resolve(dir)) // without the lock: it reads /proc
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	changed := false
	for dir, r := range now {
		if old, ok := d.cgroups[dir]; ok && old != r {
			changed = true
		}
	}
	if !changed {
		return
	}
	if err := d.syncLocked(); err != nil {
		d.log.Error("updating the data path after a cgroup changed failed", zap.Error(err))
	}
}

func interfaceIndex(name string) (int, bool) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return 0, false
	}
	return ifi.Index, true
}

// assignPortalLocked gives a transparent inlet the portal number the
// pinned maps had for its service (keeping its kernel counters across a
// restart), else the lowest free one, with its counters reset.
func (d *datapath) assignPortalLocked(inlet string, svcs ...netip.AddrPort) (uint32, error) {
	used := map[uint32]bool{}
	for _, p := range d.ports.Portals() {
		used[p.Number] = true
	}
	for _, svc := range svcs {
		n, ok := d.adopted[svc]
		delete(d.adopted, svc) // once: a later inlet on svc is a new portal
		if ok && !used[n] {
			return n, d.ports.SetPortal(inlet, n)
		}
	}
	for _, n := range d.adopted {
		used[n] = true // kept for the saved inlet that had it
	}
	for n := uint32(1); n <= maxPortal; n++ {
		if used[n] {
			continue
		}
		if err := d.kern.resetCounters(n); err != nil {
			return 0, fmt.Errorf("assign portal %d to inlet %q: %w", n, inlet, err)
		}
		return n, d.ports.SetPortal(inlet, n)
	}
	return 0, fmt.Errorf("assign portal to inlet %q: all %d portal numbers are in use", inlet, maxPortal)
}
