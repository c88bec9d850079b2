package config

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/agent/api/apitype"
)

// Agent is what a plan reads and changes: the agent's local API, as
// package api's Client has it.
type Agent interface {
	Relays(context.Context) ([]apitype.RelayInfo, error)
	Inlets(context.Context) ([]apitype.InletInfo, error)
	Outlets(context.Context) ([]apitype.OutletInfo, error)
	Workloads(context.Context) ([]apitype.WorkloadInfo, error)
	CreateRelay(context.Context, string) (apitype.RelayInfo, error)
	DeleteRelay(context.Context, string) error
	CreateInlet(context.Context, apitype.InletSpec) (apitype.Inlet, error)
	DeleteInlet(context.Context, string) error
	CreateOutlet(context.Context, apitype.OutletSpec) (apitype.Outlet, error)
	DeleteOutlet(context.Context, string) error
	CreateWorkload(context.Context, apitype.Workload) (apitype.WorkloadInfo, error)
	DeleteWorkload(context.Context, string) error
}

// Object kinds, as a Step names them.
const (
	KindRelay    = "relay"
	KindInlet    = "inlet"
	KindOutlet   = "outlet"
	KindWorkload = "workload"
)

// Step is one change: the creation or deletion of one object. An update is
// a deletion and a creation, since the agent has no update.
type Step struct {
	Delete bool   // delete the object; else create it
	Kind   string // KindRelay, ...
	Name   string
	Why    string // for the steps of an update: what differs

	relay    string
	inlet    *Inlet
	outlet   *Outlet
	workload *Workload
}

// String is the step as apply prints it once done: "created inlet pg",
// "deleted outlet db (update: to differs)".
func (s Step) String() string {
	if s.Delete {
		return s.line("deleted")
	}
	return s.line("created")
}

// Planned is the step as a dry run prints it: "would create inlet pg".
func (s Step) Planned() string {
	if s.Delete {
		return s.line("would delete")
	}
	return s.line("would create")
}

func (s Step) line(verb string) string {
	line := verb + " " + s.Kind + " " + s.Name
	if s.Why != "" {
		line += " (" + s.Why + ")"
	}
	return line
}

// Plan is the steps that make an agent match a file, in the order they
// must run.
//
// The order never opens a portal wider than both the old and the new
// configuration allow: every deletion runs before any creation, so that
// in between the agent has only what both configurations share; inlets go
// first and workloads last on the way down, workloads first and inlets
// last on the way up, so that no inlet runs while a workload it sees is
// missing. A missing workload is the unknown workload, which has no
// attributes, and a policy such as `env != "prod"` admits it; so when a
// workload is deleted or updated, every inlet with an allow_local policy
// that the file keeps is deleted first and created again last (Why says
// so). Each intermediate state is then the old state less some objects,
// or the new state less some inlets, outlets or relays: never more.
type Plan struct {
	Steps []Step
}

// Empty reports whether the agent matches the file already.
func (p Plan) Empty() bool { return len(p.Steps) == 0 }

// Current is what an agent has, as Read returns it.
type Current struct {
	Relays    []string
	Inlets    []Inlet
	Outlets   []Outlet
	Workloads []Workload
}

// Read asks the agent what it has.
func Read(ctx context.Context, a Agent) (Current, error) {
	var c Current
	rs, err := a.Relays(ctx)
	if err != nil {
		return c, fmt.Errorf("list relays: %w", err)
	}
	ins, err := a.Inlets(ctx)
	if err != nil {
		return c, fmt.Errorf("list inlets: %w", err)
	}
	outs, err := a.Outlets(ctx)
	if err != nil {
		return c, fmt.Errorf("list outlets: %w", err)
	}
	ws, err := a.Workloads(ctx)
	if err != nil {
		return c, fmt.Errorf("list workloads: %w", err)
	}
	for _, r := range rs {
		c.Relays = append(c.Relays, r.Name)
	}
	for _, in := range ins {
		c.Inlets = append(c.Inlets, inletOf(in.InletSpec))
	}
	for _, o := range outs {
		c.Outlets = append(c.Outlets, outletOf(o.OutletSpec))
	}
	for _, w := range ws {
		if w.Source != "" {
			continue // kept by its source (a pod's), not by a file
		}
		c.Workloads = append(c.Workloads, workloadOf(w.Workload))
	}
	return c, nil
}

// Diff is the plan that turns have into want. Kinds want does not list
// are left alone.
func Diff(want *File, have Current) Plan {
	var (
		downInlets, downOutlets, downRelays, downWorkloads []Step
		upInlets, upOutlets, upRelays, upWorkloads         []Step
	)
	if want.Workloads != nil {
		downWorkloads, upWorkloads = diffKind(KindWorkload, have.Workloads, *want.Workloads,
			func(w Workload) string { return w.Name }, workloadDiffers,
			func(s *Step, w Workload) { s.workload = &w })
	}
	if want.Relays != nil {
		downRelays, upRelays = diffKind(KindRelay, have.Relays, *want.Relays,
			func(r string) string { return r }, func(a, b string) string { return "" },
			func(s *Step, r string) { s.relay = r })
	}
	if want.Outlets != nil {
		downOutlets, upOutlets = diffKind(KindOutlet, have.Outlets, *want.Outlets,
			func(o Outlet) string { return o.Name }, outletDiffers,
			func(s *Step, o Outlet) { s.outlet = &o })
	}
	inlets := have.Inlets
	if want.Inlets != nil {
		downInlets, upInlets = diffKind(KindInlet, have.Inlets, *want.Inlets,
			func(in Inlet) string { return in.Name }, inletDiffers,
			func(s *Step, in Inlet) { s.inlet = &in })
		inlets = *want.Inlets
	}
	// A workload that goes away, even for a moment, is the unknown
	// workload: close the local policies that could admit it meanwhile.
	if len(downWorkloads) > 0 {
		why := "workload " + downWorkloads[0].Name + " changes"
		for _, in := range inlets {
			if in.AllowLocal == "" || slices.ContainsFunc(downInlets, func(s Step) bool { return s.Name == in.Name }) {
				continue
			}
			if !slices.ContainsFunc(have.Inlets, func(h Inlet) bool { return h.Name == in.Name }) {
				continue // created after the workloads anyway
			}
			downInlets = append(downInlets, Step{Delete: true, Kind: KindInlet, Name: in.Name, Why: why})
			up := Step{Kind: KindInlet, Name: in.Name, Why: why, inlet: &in}
			upInlets = append(upInlets, up)
		}
	}
	var p Plan
	for _, steps := range [][]Step{downInlets, downOutlets, downRelays, downWorkloads, upWorkloads, upRelays, upOutlets, upInlets} {
		p.Steps = append(p.Steps, steps...)
	}
	return p
}

// diffKind compares the objects of one kind: deletions for those that go
// or differ, creations for those that come or differ, each in the file's
// order (the agent's for deletions).
func diffKind[T any](kind string, have, want []T, name func(T) string, differs func(have, want T) string, set func(*Step, T)) (down, up []Step) {
	wantBy := map[string]T{}
	for _, w := range want {
		wantBy[name(w)] = w
	}
	haveBy := map[string]T{}
	for _, h := range have {
		haveBy[name(h)] = h
		w, kept := wantBy[name(h)]
		if !kept {
			down = append(down, Step{Delete: true, Kind: kind, Name: name(h)})
			continue
		}
		if why := differs(h, w); why != "" {
			down = append(down, Step{Delete: true, Kind: kind, Name: name(h), Why: "update: " + why})
		}
	}
	for _, w := range want {
		s := Step{Kind: kind, Name: name(w)}
		if h, had := haveBy[name(w)]; had {
			why := differs(h, w)
			if why == "" {
				continue
			}
			s.Why = "update: " + why
		}
		set(&s, w)
		up = append(up, s)
	}
	return down, up
}

// differing lists the fields whose values differ: "to, allow differ".
func differing(fields ...any) string {
	var names []string
	for i := 0; i+2 < len(fields); i += 3 {
		if fields[i+1] != fields[i+2] {
			names = append(names, fields[i].(string))
		}
	}
	switch len(names) {
	case 0:
		return ""
	case 1:
		return names[0] + " differs"
	}
	return strings.Join(names, ", ") + " differ"
}

func outletDiffers(h, w Outlet) string {
	return differing("to", h.To, w.To, "allow", h.Allow, w.Allow)
}

func inletDiffers(h, w Inlet) string {
	return differing("from", h.From, w.From, "via", h.Via, w.Via, "direct", h.Direct, w.Direct,
		"outlet", h.Outlet, w.Outlet, "allow", h.Allow, w.Allow, "outlet_node", h.OutletNode, w.OutletNode,
		"transparent", h.Transparent, w.Transparent, "allow_local", h.AllowLocal, w.AllowLocal)
}

func workloadDiffers(h, w Workload) string {
	why := differing("address", h.Address, w.Address, "interface", h.Interface, w.Interface, "cgroup", h.Cgroup, w.Cgroup)
	if !maps.Equal(h.Attributes, w.Attributes) {
		if why == "" {
			return "attributes differ"
		}
		return strings.TrimSuffix(strings.TrimSuffix(why, " differs"), " differ") + ", attributes differ"
	}
	return why
}

// Apply runs the plan's steps in order, calling done after each; it stops
// at the first that fails, whose error names it. The steps before it
// stay done: a second Apply of the same file finishes the work.
func (p Plan) Apply(ctx context.Context, a Agent, done func(Step)) error {
	for _, s := range p.Steps {
		if err := s.run(ctx, a); err != nil {
			verb := "create"
			if s.Delete {
				verb = "delete"
			}
			return fmt.Errorf("%s %s %s: %w", verb, s.Kind, s.Name, err)
		}
		if done != nil {
			done(s)
		}
	}
	return nil
}

func (s Step) run(ctx context.Context, a Agent) error {
	var err error
	switch {
	case s.Delete && s.Kind == KindRelay:
		err = a.DeleteRelay(ctx, s.Name)
	case s.Delete && s.Kind == KindInlet:
		err = a.DeleteInlet(ctx, s.Name)
	case s.Delete && s.Kind == KindOutlet:
		err = a.DeleteOutlet(ctx, s.Name)
	case s.Delete && s.Kind == KindWorkload:
		err = a.DeleteWorkload(ctx, s.Name)
	case s.Kind == KindRelay:
		_, err = a.CreateRelay(ctx, s.relay)
	case s.Kind == KindInlet:
		_, err = a.CreateInlet(ctx, s.inlet.spec())
	case s.Kind == KindOutlet:
		_, err = a.CreateOutlet(ctx, s.outlet.spec())
	case s.Kind == KindWorkload:
		_, err = a.CreateWorkload(ctx, s.workload.spec())
	default:
		err = fmt.Errorf("unknown kind %q", s.Kind)
	}
	return err
}
