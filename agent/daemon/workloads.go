package daemon

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/agent/portal"
)

// workloadsFile holds the local workloads, restored on restart.
const workloadsFile = "workloads.json"

// Workload is a local container, named by exactly one of its IPv4 address,
// its host-side veth, or a cgroup of its processes, with the attributes
// transparent inlets' --allow-local policies see.
type Workload struct {
	Name      string `json:"name"`
	Address   string `json:"address,omitempty"`   // the container's IPv4 address
	Interface string `json:"interface,omitempty"` // its host-side veth
	// Cgroup is the absolute path of a cgroup v2 directory. The veths of
	// the network namespaces of the processes in it (not in its child
	// cgroups) select the workload; it is resolved again every
	// cgroupRefresh, since processes come and go without link events.
	Cgroup     string            `json:"cgroup,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
	// Bound is, for a workload named by address, the host-side interface
	// its address is bound to (binding.go): set by the agent, never taken
	// from a request. Files written before it existed have none: such a
	// workload is bound at the first sync with the data path, when exactly
	// one container interface has its address.
	Bound *Binding `json:"bound,omitempty"`
	// Source is who keeps the workload: "" for the operator (the local
	// API, the configuration file), or an in-process source such as
	// SourceKubernetes (sourced.go): set by the agent, never taken from a
	// request.
	Source string `json:"source,omitempty"`
}

// WorkloadInfo is a workload and the number the kernel knows it by.
type WorkloadInfo struct {
	Workload
	Number uint32 `json:"number"`
	// Unresolved says why a workload named by address is bound to no
	// interface now; its packets are the unknown workload's until it is.
	Unresolved string `json:"unresolved,omitempty"`
}

// maxInterfaceName is IFNAMSIZ less the terminating NUL.
const maxInterfaceName = 15

func (w *Workload) check() error {
	if err := portal.CheckName("workload", w.Name, ErrInvalidWorkload); err != nil {
		return err
	}
	if w.selectors() != 1 {
		return fmt.Errorf("workload %q: give exactly one of --address IP, --interface DEV or --cgroup PATH: %w", w.Name, ErrInvalidWorkload)
	}
	if w.Address != "" {
		ip, err := netip.ParseAddr(w.Address)
		if err != nil || !ip.Is4() || ip.IsUnspecified() {
			return fmt.Errorf("workload %q: --address %q: want the container's IPv4 address, e.g. 10.10.0.2: %w", w.Name, w.Address, ErrInvalidWorkload)
		}
	}
	if w.Interface != "" && (len(w.Interface) > maxInterfaceName || strings.ContainsAny(w.Interface, "/ \t\n:")) {
		return fmt.Errorf("workload %q: --interface %q: want a device name of at most %d characters without / : or spaces: %w", w.Name, w.Interface, maxInterfaceName, ErrInvalidWorkload)
	}
	if w.Cgroup != "" && (!filepath.IsAbs(w.Cgroup) || filepath.Clean(w.Cgroup) != w.Cgroup || w.Cgroup == "/") {
		return fmt.Errorf("workload %q: --cgroup %q: want the absolute, clean path of a cgroup v2 directory, e.g. /sys/fs/cgroup/app: %w", w.Name, w.Cgroup, ErrInvalidWorkload)
	}
	for k := range w.Attributes {
		if k == "" {
			return fmt.Errorf("workload %q: an attribute has an empty name: %w", w.Name, ErrInvalidWorkload)
		}
	}
	return nil
}

// selectors counts the selectors given.
func (w *Workload) selectors() int {
	n := 0
	for _, s := range []string{w.Address, w.Interface, w.Cgroup} {
		if s != "" {
			n++
		}
	}
	return n
}

// conflicts reports which existing workload selects the same container.
func (w *Workload) conflicts(others []Workload) error {
	for _, o := range others {
		switch {
		case o.Name == w.Name:
			return fmt.Errorf("create workload %q: %w", w.Name, portal.ErrExists)
		case w.Address != "" && o.Address == w.Address:
			return fmt.Errorf("create workload %q: workload %q already has address %s: %w", w.Name, o.Name, w.Address, portal.ErrExists)
		case w.Interface != "" && o.Interface == w.Interface:
			return fmt.Errorf("create workload %q: workload %q already has interface %s: %w", w.Name, o.Name, w.Interface, portal.ErrExists)
		case w.Cgroup != "" && o.Cgroup == w.Cgroup:
			return fmt.Errorf("create workload %q: workload %q already has cgroup %s: %w", w.Name, o.Name, w.Cgroup, portal.ErrExists)
		}
	}
	return nil
}

// CreateWorkload adds a local workload, saves it and updates the data path.
func (a *Agent) CreateWorkload(w Workload) (WorkloadInfo, error) { return a.dp.createWorkload(w) }

// DeleteWorkload forgets a workload; connections it may no longer make are reset.
func (a *Agent) DeleteWorkload(name string) error { return a.dp.deleteWorkload(name) }

// Workloads lists the local workloads by name.
func (a *Agent) Workloads() []WorkloadInfo { return a.dp.list() }

// createWorkload is CreateWorkload.
func (d *datapath) createWorkload(w Workload) (WorkloadInfo, error) {
	if err := w.check(); err != nil {
		return WorkloadInfo{}, fmt.Errorf("create workload: %w", err)
	}
	w.Bound = nil // the agent's to find, never the caller's to say
	w.Source = ""
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := w.conflicts(d.operatorsLocked()); err != nil {
		return WorkloadInfo{}, err
	}
	if w.Address != "" && d.kern != nil {
		veths, err := d.sys.ContainerVeths()
		if err != nil {
			return WorkloadInfo{}, fmt.Errorf("create workload %q: %w", w.Name, err)
		}
		if w.Bound, err = bindNew(netip.MustParseAddr(w.Address), veths); err != nil {
			return WorkloadInfo{}, fmt.Errorf("create workload %q: %w: %w", w.Name, err, ErrInvalidWorkload)
		}
	}
	d.yieldSourcedLocked(w) // the operator's workload wins (sourced.go)
	delete(d.suspects, w.Name)
	d.workloads = append(d.workloads, w)
	d.nextWorkload++
	d.workloadNums[w.Name] = d.nextWorkload
	d.names.set(d.nextWorkload, w.Name)
	info := WorkloadInfo{Workload: w, Number: d.nextWorkload}
	d.mergeSourcedLocked()
	return info, d.changedWorkloadsLocked()
}

// deleteWorkload is DeleteWorkload.
func (d *datapath) deleteWorkload(name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	i := slices.IndexFunc(d.workloads, func(w Workload) bool { return w.Name == name })
	if i < 0 {
		return fmt.Errorf("delete workload %q: %w", name, portal.ErrNotFound)
	}
	if src := d.workloads[i].Source; src != "" {
		return fmt.Errorf("delete workload %q: it comes from %s and follows it (delete or relabel the pod instead): %w: %w", name, src, ErrSourcedWorkload, ErrInvalidWorkload)
	}
	d.forgetLocked(i)
	d.mergeSourcedLocked() // a sourced workload it hid comes back
	return d.changedWorkloadsLocked()
}

// forgetLocked removes d.workloads[i] and its number.
func (d *datapath) forgetLocked(i int) {
	name := d.workloads[i].Name
	d.workloads = slices.Delete(d.workloads, i, i+1)
	d.names.forget(d.workloadNums[name])
	delete(d.workloadNums, name)
	delete(d.suspects, name)
	delete(d.unbound, name)
}

// list is Workloads.
func (d *datapath) list() []WorkloadInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]WorkloadInfo, 0, len(d.workloads))
	for _, w := range d.workloads {
		out = append(out, WorkloadInfo{Workload: w, Number: d.workloadNums[w.Name], Unresolved: d.unbound[w.Name]})
	}
	slices.SortFunc(out, func(x, y WorkloadInfo) int { return strings.Compare(x.Name, y.Name) })
	return out
}

// changedWorkloadsLocked saves the operator's workloads and updates the
// data path.
func (d *datapath) changedWorkloadsLocked() error {
	err := d.saveWorkloadsLocked()
	if err != nil {
		return err
	}
	return d.syncLocked()
}

// loadWorkloads restores the saved workloads and numbers them.
func (d *datapath) loadWorkloads() error {
	var ws []Workload
	if _, err := readJSON(filepath.Join(d.dir, workloadsFile), &ws); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range ws {
		w.Source = "" // a source says its workloads again at start
		if err := w.check(); err != nil {
			return fmt.Errorf("restore saved workloads from %s: %w", workloadsFile, err)
		}
		d.workloads = append(d.workloads, w)
		d.nextWorkload++
		d.workloadNums[w.Name] = d.nextWorkload
		d.names.set(d.nextWorkload, w.Name)
	}
	return nil
}
