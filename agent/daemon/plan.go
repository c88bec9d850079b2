package daemon

import (
	"cmp"
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
	Verdicts   []verdict                 // allowed (workload, portal) pairs, sorted
	Denied     map[uint32]bool           // portals whose peer is out: every connection refused
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

// planInlet is a transparent inlet as the plan needs it.
type planInlet struct {
	Service    netip.AddrPort
	Portal     uint32
	AllowLocal *policy.Policy
	Denied     bool // its peer was revoked, or lost the attributes the inlet's --allow needs
}

// planWorkload is a numbered workload.
type planWorkload struct {
	Workload
	Number uint32
}

// computePlan decides the map contents. r resolves workloads named by
// interface or cgroup to devices, each an endpoint with any source address;
// a workload whose interface is missing, or whose cgroup is missing or has
// no process in a container, gets no endpoint (its packets count as the
// unknown workload) until it is resolved. If two workloads resolve to one
// device, the later one has it.
func computePlan(inlets []planInlet, workloads []planWorkload, r resolvers) plan {
	p := plan{Services: map[netip.AddrPort]uint32{}, Endpoints: map[endpoint]uint32{}, Denied: map[uint32]bool{}}
	for _, in := range inlets {
		p.Services[in.Service] = in.Portal
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
			if addr, err := netip.ParseAddr(w.Address); err == nil {
				p.Endpoints[endpoint{Addr: addr}] = w.Number
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
