package config

import "github.com/sluicehq/sluice/agent/api/apitype"

// Kinds names the lists `agentctl get` prints, for its arguments.
var Kinds = []string{"relays", "inlets", "outlets", "workloads", "all"}

// FromCurrent is the file that describes what an agent has, for the kinds
// named (relays, inlets, outlets, workloads, or all): applying it to that
// agent changes nothing. Each kind named is present, even when empty, so
// that applying the file later deletes what was created since.
func FromCurrent(c Current, kinds ...string) *File {
	f := &File{}
	for _, k := range kinds {
		all := k == "all"
		if all || k == "relays" {
			f.Relays = ptr(append([]string{}, c.Relays...))
		}
		if all || k == "inlets" {
			f.Inlets = ptr(append([]Inlet{}, c.Inlets...))
		}
		if all || k == "outlets" {
			f.Outlets = ptr(append([]Outlet{}, c.Outlets...))
		}
		if all || k == "workloads" {
			f.Workloads = ptr(append([]Workload{}, c.Workloads...))
		}
	}
	return f
}

func ptr[T any](v T) *T { return &v }

func inletOf(s apitype.InletSpec) Inlet {
	return Inlet{Name: s.Name, From: s.From, Via: s.Via, Direct: s.Direct, Outlet: s.Outlet, Allow: s.Allow,
		OutletNode: s.OutletNode, Transparent: s.Transparent, AllowLocal: s.AllowLocal}
}

func (in *Inlet) spec() apitype.InletSpec {
	return apitype.InletSpec{Name: in.Name, From: in.From, Via: in.Via, Direct: in.Direct, Outlet: in.Outlet, Allow: in.Allow,
		OutletNode: in.OutletNode, Transparent: in.Transparent, AllowLocal: in.AllowLocal}
}

func outletOf(s apitype.OutletSpec) Outlet { return Outlet{Name: s.Name, To: s.To, Allow: s.Allow} }

func (o *Outlet) spec() apitype.OutletSpec {
	return apitype.OutletSpec{Name: o.Name, To: o.To, Allow: o.Allow}
}

// workloadOf drops what the agent found (Bound): the file says only what
// the operator does.
func workloadOf(w apitype.Workload) Workload {
	out := Workload{Name: w.Name, Address: w.Address, Interface: w.Interface, Cgroup: w.Cgroup}
	if len(w.Attributes) > 0 {
		out.Attributes = w.Attributes
	}
	return out
}

func (w *Workload) spec() apitype.Workload {
	return apitype.Workload{Name: w.Name, Address: w.Address, Interface: w.Interface, Cgroup: w.Cgroup, Attributes: w.Attributes}
}
