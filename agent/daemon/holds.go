package daemon

import (
	"sort"
	"sync"
)

// holds are what keeps the agent from being ready beyond its own state:
// work that a command started and has not finished (its configuration file
// not applied yet, the node's pods not listed yet). The agent's status lists
// them, so `agentctl wait --ready` and /readyz wait for them alike.
type holds struct {
	mu  sync.Mutex
	why map[string]string // name → the reason, for as long as it holds
}

// Hold keeps the agent from being ready for the reason named name, with err
// saying why, or lets go of it when err is nil.
func (a *Agent) Hold(name string, err error) {
	a.holds.mu.Lock()
	defer a.holds.mu.Unlock()
	if err == nil {
		delete(a.holds.why, name)
		return
	}
	if a.holds.why == nil {
		a.holds.why = make(map[string]string)
	}
	a.holds.why[name] = err.Error()
}

// pending lists the holds as "name: why", sorted.
func (h *holds) pending() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.why))
	for name, why := range h.why {
		out = append(out, name+": "+why)
	}
	if len(out) == 0 {
		return nil
	}
	sort.Strings(out)
	return out
}
