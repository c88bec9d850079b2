package daemon

// Local identity: where the agent learns which workload a connection comes
// from, for transparent inlets and for explicit inlets with --allow-local.
//
//	app ──SYN──> steer on its veth: source bound to another veth? reset (spoofed)
//	             verdict for (workload, portal)? else reset
//	             records the flow (workload, ifindex)
//	    ──explicit inlet: unmarked, the host stack──> the inlet's listener
//	    ──accept──> admitLocal: takeFlow -> workload (none: 0, the unknown)
//	                the plan allows (workload, portal)? else reset, counted refused
//	    ──> portal manager

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/portal"
)

// ErrLocalDenied means an explicit inlet's --allow-local does not permit
// the workload a connection comes from.
var ErrLocalDenied = errors.New("--allow-local does not permit this workload")

// system is what the agent reads of the host it runs on (datapath_linux.go).
type system struct {
	// Interfaces lists the ifindexes of the agent's network namespace.
	Interfaces func() ([]int, error)
	// ContainerVeths lists the container veths and the addresses behind
	// them (loader.ContainerVeths).
	ContainerVeths func() ([]containerVeth, error)
	// HostAddrs lists the IPv4 addresses of the agent's namespace.
	HostAddrs func() ([]netip.Addr, error)
}

// followBindingsLocked applies the binding rule (binding.go) to every
// workload named by address, saving the workloads if a binding changed.
func (d *datapath) followBindingsLocked() {
	var present map[int]bool
	if idx, err := d.sys.Interfaces(); err == nil {
		present = map[int]bool{}
		for _, i := range idx {
			present[i] = true
		}
	} else {
		d.log.Warn("cannot list interfaces; keeping every workload's binding", zap.Error(err))
	}
	var (
		veths []containerVeth
		err   error
		read  bool
	)
	h := hostView{Present: present, Before: d.ifaces, Veths: func() ([]containerVeth, error) {
		if !read {
			read = true
			veths, err = d.sys.ContainerVeths()
		}
		return veths, err
	}}
	changed := false
	for i := range d.workloads {
		w := &d.workloads[i]
		addr, err := netip.ParseAddr(w.Address)
		if w.Address == "" || err != nil {
			continue
		}
		next, suspects, why := followBinding(addr, w.Bound, d.suspects[w.Name], h)
		if next.String() != w.Bound.String() {
			changed = true
			if next != nil {
				d.log.Info("workload address bound to its interface", zap.String("workload", w.Name),
					zap.String("address", w.Address), zap.Stringer("interface", next))
			} else {
				d.log.Warn("workload address unbound: its packets are the unknown workload's until it is bound again",
					zap.String("workload", w.Name), zap.String("address", w.Address), zap.String("why", why))
			}
			w.Bound = next
		}
		if suspects != nil {
			d.suspects[w.Name] = suspects
		} else {
			delete(d.suspects, w.Name)
		}
		if why != "" {
			d.unbound[w.Name] = why
		} else {
			delete(d.unbound, w.Name)
		}
	}
	if present != nil {
		d.ifaces = present
	}
	if changed {
		if err := d.saveWorkloadsLocked(); err != nil {
			d.log.Error("saving the workloads' bindings failed", zap.Error(err))
		}
	}
}

// listenAddrsLocked returns the addresses an explicit inlet on from can be
// reached at: from itself, or each host address for 0.0.0.0.
func (d *datapath) listenAddrsLocked(from string) ([]netip.AddrPort, error) {
	ap, err := portal.ExplicitAddr(from)
	if err != nil {
		return nil, err
	}
	if !ap.Addr().IsUnspecified() {
		return []netip.AddrPort{ap}, nil
	}
	addrs, err := d.sys.HostAddrs()
	if err != nil {
		return nil, err
	}
	d.hostAddrs = addrs
	out := make([]netip.AddrPort, 0, len(addrs))
	for _, h := range addrs {
		out = append(out, netip.AddrPortFrom(h, ap.Port()))
	}
	return out, nil
}

// explicitLocked gives a new explicit inlet with --allow-local its portal
// number, if the data path runs: only the kernel can say which interface a
// connection came in on, so without it the inlet cannot tell workloads
// apart, and is refused.
func (d *datapath) explicitLocked(spec portal.InletSpec) error {
	if d.kern == nil {
		return fmt.Errorf("create inlet %q: --allow-local on an explicit inlet needs the BPF data path, which is not running on this agent (%s): "+
			"only the kernel sees which interface a connection comes in on, so the agent could not tell containers apart; "+
			"without --allow-local the inlet admits anyone who can reach %s: %w", spec.Name, d.kernReason, spec.From, ErrNoDatapath)
	}
	listen, err := d.listenAddrsLocked(spec.From)
	if err != nil {
		return fmt.Errorf("create inlet %q: %w", spec.Name, err)
	}
	_, err = d.assignPortalLocked(spec.Name, listen...)
	return err
}

// admitLocal decides, for a connection an explicit inlet with --allow-local
// accepted, which workload it comes from (the one the steer program
// recorded; none: the unknown workload 0, as for connections from the host
// itself or through no followed veth) and whether the inlet's policy
// permits it. Permitted, serve runs with the workload while the plan
// cannot change, so that a policy change that follows resets it.
func (d *datapath) admitLocal(inlet string, c *net.TCPConn, serve func(workload uint32)) error {
	d.mu.Lock()
	k := d.kern
	d.mu.Unlock()
	if k == nil {
		return fmt.Errorf("check --allow-local of inlet %q: %w", inlet, ErrNoDatapath)
	}
	src, dst := tcpAddrPort(c.RemoteAddr()), tcpAddrPort(c.LocalAddr())
	w, _, err := k.takeFlow(src, dst)
	if err != nil {
		return fmt.Errorf("check --allow-local of inlet %q: %w", inlet, err)
	}
	d.planMu.RLock()
	defer d.planMu.RUnlock()
	p := d.plan
	if p == nil || p.Inlets[inlet] == 0 || !p.allows(w, p.Inlets[inlet]) {
		return fmt.Errorf("inlet %q: connection from %v (workload %d): %w", inlet, src, w, ErrLocalDenied)
	}
	serve(w)
	return nil
}

// refreshHost syncs again when an address workload is unbound (its
// container may have come back) or the host's addresses changed under an
// explicit inlet on 0.0.0.0.
func (d *datapath) refreshHost() {
	d.mu.Lock()
	if d.kern == nil {
		d.mu.Unlock()
		return
	}
	unbound := len(d.unbound) > 0
	wildcard := slices.ContainsFunc(d.ports.Portals(), func(p portal.NumberedInlet) bool {
		ap, err := portal.ExplicitAddr(p.Spec.From)
		return !p.Spec.Transparent && p.Spec.AllowLocal != "" && err == nil && ap.Addr().IsUnspecified()
	})
	last, hostAddrs := d.hostAddrs, d.sys.HostAddrs
	d.mu.Unlock()
	if !unbound {
		if !wildcard {
			return
		}
		now, err := hostAddrs() // without the lock: a netlink dump
		if err != nil || slices.Equal(now, last) {
			return
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.syncLocked(); err != nil {
		d.log.Error("updating the data path after the host changed failed", zap.Error(err))
	}
}

func tcpAddrPort(a net.Addr) netip.AddrPort {
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := t.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
