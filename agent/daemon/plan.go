package daemon

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/sluicehq/sluice/agent/policy"
	"github.com/sluicehq/sluice/maps"
)

// plan is what the data path maps should hold: computed from the
// configuration alone, so that it is testable without a kernel.
type plan struct {
	Services   map[netip.AddrPort]uint32 // service address -> portal number
	Endpoints  map[endpoint]uint32       // where a packet comes from -> workload number
	Bindings   map[netip.Addr]uint32     // a workload's address -> the ifindex it is bound to
	Verdicts   []verdict                 // allowed (workload, portal) pairs, sorted
	Denied     map[uint32]bool           // portals whose peer is out: every connection refused
	Explicit   map[uint32]bool           // portals of explicit inlets (--allow-local): passed to their listener, unmarked
	Inlets     map[string]uint32         // inlet name -> portal number
	Unresolved []string                  // workload selectors not resolved now, and why
}

// resolvers find the devices of workloads named by interface or cgroup.
type resolvers struct {
	// Ifindex returns a device's ifindex, false if it is missing.
	Ifindex func(name string) (int, bool)
	// Cgroup returns the host-side veth ifindexes of the containers whose
	// processes are in a cgroup (loader.CgroupVeths).
	Cgroup func(dir string) ([]int, error)
}

// endpoint is a packet's origin: a device (0 = any) and a source address
// (zero = any behind the device).
type endpoint = maps.Endpoint

// verdict allows a workload (0 = unknown) to reach a portal.
type verdict = maps.Verdict

// planInlet is an inlet with a portal number (transparent, or explicit
// with --allow-local) as the plan needs it.
type planInlet struct {
	Name       string
	Service    netip.AddrPort   // a transparent inlet's service address
	Listen     []netip.AddrPort // an explicit inlet's: the host addresses it listens on
	Explicit   bool
	Portal     uint32
	AllowLocal *policy.Policy
	Denied     bool // its peer was revoked, or lost the attributes the inlet's --allow needs
}

// planWorkload is a numbered workload.
type planWorkload struct {
	Workload
	Number uint32
	// Unbound says why a workload named by address has no binding now.
	Unbound string
}

// computePlan decides the map contents. A workload named by address has
// the endpoint (its bound interface, its address) and binds the address to
// that interface (anti-spoofing); unbound, it has neither (its packets
// count as the unknown workload's). r resolves workloads named by
// interface or cgroup to devices, each an endpoint with any source
// address; a workload whose interface is missing, or whose cgroup is
// missing or has no process in a container, gets no endpoint until it is
// resolved. If two workloads resolve to one device, the later one has it.
// An explicit inlet's addresses are services too, unless a transparent
// inlet has one (then that one wins, and the clash is reported).
func computePlan(inlets []planInlet, workloads []planWorkload, r resolvers) plan {
	p := plan{Services: map[netip.AddrPort]uint32{}, Endpoints: map[endpoint]uint32{}, Bindings: map[netip.Addr]uint32{},
		Denied: map[uint32]bool{}, Explicit: map[uint32]bool{}, Inlets: map[string]uint32{}}
	for _, in := range inlets {
		if !in.Explicit {
			p.Services[in.Service] = in.Portal
		}
	}
	for _, in := range inlets {
		p.Inlets[in.Name] = in.Portal
		if in.Explicit {
			p.Explicit[in.Portal] = true
			for _, l := range in.Listen {
				if n, taken := p.Services[l]; taken {
					p.Unresolved = append(p.Unresolved, fmt.Sprintf("inlet %s: %v is already portal %d's service", in.Name, l, n))
					continue
				}
				p.Services[l] = in.Portal
			}
		}
		if in.Denied {
			p.Denied[in.Portal] = true
		}
		if in.AllowLocal.Allows(map[string]string{}) {
			p.Verdicts = append(p.Verdicts, verdict{Workload: 0, Portal: in.Portal})
		}
	}
	for _, w := range workloads {
		switch {
		case w.Address != "":
			addr, err := netip.ParseAddr(w.Address)
			switch {
			case err != nil:
			case w.Bound != nil && w.Bound.Ifindex > 0:
				p.Endpoints[endpoint{Ifindex: uint32(w.Bound.Ifindex), Addr: addr}] = w.Number
				p.Bindings[addr] = uint32(w.Bound.Ifindex)
			default:
				p.Unresolved = append(p.Unresolved, "address "+w.Address+": "+cmp.Or(w.Unbound, "bound to no interface"))
			}
		case w.Interface != "":
			if i, ok := r.Ifindex(w.Interface); ok {
				p.Endpoints[endpoint{Ifindex: uint32(i)}] = w.Number
			} else {
				p.Unresolved = append(p.Unresolved, "interface "+w.Interface+": not found")
			}
		case w.Cgroup != "":
			idx, err := r.Cgroup(w.Cgroup)
			switch {
			case err != nil:
				p.Unresolved = append(p.Unresolved, "cgroup "+w.Cgroup+": "+err.Error())
			case len(idx) == 0:
				p.Unresolved = append(p.Unresolved, "cgroup "+w.Cgroup+": no process in a container")
			}
			for _, i := range idx {
				p.Endpoints[endpoint{Ifindex: uint32(i)}] = w.Number
			}
		}
		attrs := w.Attributes
		if attrs == nil {
			attrs = map[string]string{}
		}
		for _, in := range inlets {
			if in.AllowLocal.Allows(attrs) {
				p.Verdicts = append(p.Verdicts, verdict{Workload: w.Number, Portal: in.Portal})
			}
		}
	}
	slices.SortFunc(p.Verdicts, func(a, b verdict) int {
		return cmp.Or(cmp.Compare(a.Portal, b.Portal), cmp.Compare(a.Workload, b.Workload))
	})
	return p
}

// allows reports whether the plan lets workload reach portal.
func (p *plan) allows(workload, portal uint32) bool {
	if p.Denied[portal] {
		return false
	}
	_, found := slices.BinarySearchFunc(p.Verdicts, verdict{Workload: workload, Portal: portal}, func(a, b verdict) int {
		return cmp.Or(cmp.Compare(a.Portal, b.Portal), cmp.Compare(a.Workload, b.Workload))
	})
	return found
}
