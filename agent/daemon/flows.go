package daemon

import (
	"strconv"
	"sync"

	"github.com/sluicehq/sluice/agent/flowlog"
	"github.com/sluicehq/sluice/maps"
)

// workloadNames maps the workload numbers the kernel and the portals use
// to their names, for the flow log. Its lock is a leaf: the portals ask
// under the data path's locks.
type workloadNames struct {
	mu    sync.Mutex // guards names
	names map[uint32]string
}

func (w *workloadNames) set(n uint32, name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.names == nil {
		w.names = map[uint32]string{}
	}
	w.names[n] = name
}

func (w *workloadNames) forget(n uint32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.names, n)
}

// name is workload n's name, "" if it has none now.
func (w *workloadNames) name(n uint32) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.names[n]
}

// workloadName is the flow log's name of workload n: its name, "#N" for a
// number the agent no longer knows, "" for the unknown workload (0).
func (d *datapath) workloadName(n uint32) string {
	if n == 0 {
		return ""
	}
	if name := d.names.name(n); name != "" {
		return name
	}
	return "#" + strconv.FormatUint(uint64(n), 10)
}

// refused records a connection the kernel refused in the flow log, with
// the name of the inlet whose portal number the kernel gave.
func (d *datapath) refused(r maps.Refusal) {
	e := flowlog.Event{
		Type: flowlog.TypeRefused, Direction: flowlog.Inlet, Verdict: flowlog.Refused,
		By: flowlog.ByKernel, Reason: r.Reason.String(), Workload: d.workloadName(r.Workload),
		Client: r.Client.String(), Target: r.Service.String(),
	}
	for _, p := range d.ports.Portals() {
		if p.Number == r.Portal {
			e.Portal = p.Spec.Name
			break
		}
	}
	if e.Portal == "" {
		e.Portal = "#" + strconv.FormatUint(uint64(r.Portal), 10)
	}
	d.flows.Record(e)
}

// Flows is the agent's flow log (agentctl observe).
func (a *Agent) Flows() *flowlog.Log { return a.flows }
