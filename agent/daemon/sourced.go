package daemon

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"go.uber.org/zap"
)

// Workloads from a source: something in the agent's process (package
// kube's pod informer) that knows which workloads this host has and keeps
// them up to date, instead of the operator.
//
//	source ──ReplaceWorkloads(source, the whole set)──> d.sourced[source]
//	       ──mergeSourcedLocked──> d.workloads (the operator's first, then
//	       the sourced ones no operator's workload hides) ──syncLocked──> maps
//
// A sourced workload is what `agentctl workload create` makes, with Source
// set: a workload named by its address, bound to the interface the source
// found (or, when it found none, by the rule of binding.go), with its
// attributes. The rules:
//   - The source says its whole set each time (level, not edge): a resync or
//     a relist that says the same set again changes nothing, one that says
//     less removes what it left out. Nothing changed: nothing is written.
//   - The operator's workloads win: a sourced workload whose name or address
//     an operator's workload has is left out (and logged) until that one is
//     deleted; the operator cannot delete a sourced workload
//     (ErrSourcedWorkload): it follows its source.
//   - Sourced workloads are not saved in workloads.json: the source says
//     them again when the agent starts.

// SourceKubernetes is the source of the workloads of the pods of the
// agent's node (package kube).
const SourceKubernetes = "kubernetes"

// ErrSourcedWorkload means the operator asked to delete a workload that a
// source keeps (wrapped with ErrInvalidWorkload as well).
var ErrSourcedWorkload = errors.New("the workload is kept by a source, not by the operator")

// ReplaceWorkloads makes ws the whole set of workloads source keeps on
// this agent, and updates the data path if that changed anything. Each
// workload must be valid as CreateWorkload takes it, with distinct names;
// ws[i].Bound, if set, is where its address lives (the source found it);
// Source is set to source. Invalid workloads are left out, and the error
// says which; the others are applied.
func (a *Agent) ReplaceWorkloads(source string, ws []Workload) error {
	return a.dp.replaceSourced(source, ws)
}

// replaceSourced is ReplaceWorkloads.
func (d *datapath) replaceSourced(source string, ws []Workload) error {
	if source == "" {
		return fmt.Errorf("replace workloads: no source named: %w", ErrInvalidWorkload)
	}
	var errs []error
	set := make([]Workload, 0, len(ws))
	seen := map[string]bool{}
	for _, w := range ws {
		w.Source = source
		if err := w.check(); err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[w.Name] {
			errs = append(errs, fmt.Errorf("workload %q: given twice: %w", w.Name, ErrInvalidWorkload))
			continue
		}
		seen[w.Name] = true
		w.Attributes = cloneAttrs(w.Attributes)
		set = append(set, w)
	}
	slices.SortFunc(set, func(x, y Workload) int { return strings.Compare(x.Name, y.Name) })
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sourced == nil {
		d.sourced = map[string][]Workload{}
	}
	d.sourced[source] = set
	var err error
	if d.mergeSourcedLocked() {
		err = d.changedWorkloadsLocked()
	}
	if len(errs) > 0 {
		err = errors.Join(append([]error{fmt.Errorf("replace workloads of %s: some left out", source)}, append(errs, err)...)...)
	}
	return err
}

func cloneAttrs(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// operatorsLocked returns the operator's workloads.
func (d *datapath) operatorsLocked() []Workload {
	var out []Workload
	for _, w := range d.workloads {
		if w.Source == "" {
			out = append(out, w)
		}
	}
	return out
}

// yieldSourcedLocked removes the sourced workloads that the operator's new
// workload w hides (same name or same address), before w takes its number.
func (d *datapath) yieldSourcedLocked(w Workload) {
	for i := len(d.workloads) - 1; i >= 0; i-- {
		o := d.workloads[i]
		if o.Source != "" && (o.Name == w.Name || (w.Address != "" && o.Address == w.Address)) {
			d.forgetLocked(i)
		}
	}
}

// mergeSourcedLocked makes the sourced part of d.workloads what the
// sources say, less what the operator's workloads hide, and reports
// whether anything changed. A workload that stays keeps its number (its
// connections stay its own); one whose address changed takes the source's
// binding; one whose address did not keeps the agent's binding unless the
// source found one.
func (d *datapath) mergeSourcedLocked() bool {
	taken := map[string]string{} // name or "addr:"+address -> the operator's workload that has it
	for _, w := range d.workloads {
		if w.Source == "" {
			taken[w.Name] = w.Name
			if w.Address != "" {
				taken["addr:"+w.Address] = w.Name
			}
		}
	}
	want := map[string]Workload{}
	hidden := map[string]string{}
	sources := make([]string, 0, len(d.sourced))
	for s := range d.sourced {
		sources = append(sources, s)
	}
	slices.Sort(sources)
	for _, s := range sources {
		for _, w := range d.sourced[s] {
			by, ok := taken[w.Name]
			if !ok && w.Address != "" {
				by, ok = taken["addr:"+w.Address]
			}
			if ok {
				hidden[w.Name] = by
				continue
			}
			taken[w.Name] = w.Source + " " + w.Name
			if w.Address != "" {
				taken["addr:"+w.Address] = w.Source + " " + w.Name
			}
			want[w.Name] = w
		}
	}
	for name, by := range hidden {
		if d.hidden[name] != by {
			d.log.Warn("a sourced workload is left out: an operator's workload (or another source's) has its name or address, and wins",
				zap.String("workload", name), zap.String("hidden_by", by))
		}
	}
	d.hidden = hidden

	changed := false
	for i := len(d.workloads) - 1; i >= 0; i-- {
		cur := &d.workloads[i]
		if cur.Source == "" {
			continue
		}
		w, ok := want[cur.Name]
		if !ok || w.Source != cur.Source {
			d.forgetLocked(i)
			changed = true
			continue
		}
		delete(want, cur.Name)
		next := w
		if w.Address == cur.Address && w.Bound == nil {
			next.Bound = cur.Bound
		}
		if !reflect.DeepEqual(next, *cur) {
			if next.Address != cur.Address || next.Bound.String() != cur.Bound.String() {
				delete(d.suspects, cur.Name)
				delete(d.unbound, cur.Name)
			}
			*cur = next
			changed = true
		}
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		w := want[n]
		d.workloads = append(d.workloads, w)
		d.nextWorkload++
		d.workloadNums[w.Name] = d.nextWorkload
		d.names.set(d.nextWorkload, w.Name)
		changed = true
	}
	return changed
}

// saveWorkloadsLocked writes the operator's workloads to workloads.json.
func (d *datapath) saveWorkloadsLocked() error {
	ws := d.operatorsLocked()
	if ws == nil {
		ws = []Workload{}
	}
	return writeJSON(filepath.Join(d.dir, workloadsFile), ws)
}
