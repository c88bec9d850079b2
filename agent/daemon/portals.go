package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/sluicehq/sluice/agent/portal"
	"github.com/sluicehq/sluice/agent/relay"
)

// nextName returns the first of prefix-1, prefix-2, ... that taken rejects.
func nextName(prefix string, taken func(string) bool) string {
	for i := 1; ; i++ {
		if n := fmt.Sprintf("%s-%d", prefix, i); !taken(n) {
			return n
		}
	}
}

// CreateInlet starts an inlet and saves it.
func (a *Agent) CreateInlet(spec portal.InletSpec) (portal.InletInfo, error) {
	a.conf.mu.Lock()
	defer a.conf.mu.Unlock()
	if spec.Name == "" {
		spec.Name = nextName("inlet", a.conf.hasInletLocked)
	}
	if a.conf.hasInletLocked(spec.Name) {
		return portal.InletInfo{}, fmt.Errorf("create inlet %q: %w", spec.Name, portal.ErrExists)
	}
	info, err := a.dp.startInlet(spec)
	if err != nil {
		return info, err
	}
	a.conf.cfg.Inlets = append(a.conf.cfg.Inlets, spec)
	return info, errors.Join(a.conf.saveLocked(), a.dp.sync())
}

// DeleteInlet stops an inlet and forgets it.
func (a *Agent) DeleteInlet(name string) error {
	a.conf.mu.Lock()
	defer a.conf.mu.Unlock()
	saved := a.conf.hasInletLocked(name)
	// A saved transparent inlet does not run while the data path is off.
	if err := a.ports.RemoveInlet(name); err != nil && !(saved && errors.Is(err, portal.ErrNotFound)) {
		return err
	}
	a.conf.cfg.Inlets = slices.DeleteFunc(a.conf.cfg.Inlets, func(s portal.InletSpec) bool { return s.Name == name })
	a.conf.forget("inlet", name)
	return errors.Join(a.conf.saveLocked(), a.dp.sync())
}

// CreateOutlet creates an outlet, saves it and publishes the outlets'
// policies to the hub.
func (a *Agent) CreateOutlet(spec portal.OutletSpec) (portal.OutletInfo, error) {
	if err := portal.CheckTargetResolves(context.Background(), net.DefaultResolver, spec); err != nil {
		return portal.OutletInfo{}, fmt.Errorf("create outlet: %w", err)
	}
	a.conf.mu.Lock()
	defer a.conf.mu.Unlock()
	if spec.Name == "" {
		spec.Name = nextName("outlet", a.conf.hasOutletLocked)
	}
	info, err := a.ports.AddOutlet(spec)
	if err != nil {
		return info, err
	}
	a.conf.cfg.Outlets = append(a.conf.cfg.Outlets, spec)
	err = a.conf.saveLocked()
	if err == nil {
		a.publishOutlets(context.Background(), a.conf.cfg.Outlets)
	}
	return info, err
}

// DeleteOutlet removes an outlet and forgets it.
func (a *Agent) DeleteOutlet(name string) error {
	a.conf.mu.Lock()
	defer a.conf.mu.Unlock()
	saved := a.conf.hasOutletLocked(name)
	// A saved outlet that failed to start does not run.
	if err := a.ports.RemoveOutlet(name); err != nil && !(saved && errors.Is(err, portal.ErrNotFound)) {
		return err
	}
	a.conf.cfg.Outlets = slices.DeleteFunc(a.conf.cfg.Outlets, func(s portal.OutletSpec) bool { return s.Name == name })
	a.conf.forget("outlet", name)
	a.publishOutlets(context.Background(), a.conf.cfg.Outlets)
	return a.conf.saveLocked()
}

// InletInfo is an inlet as the agent holds it: running, with its counters,
// or configured and failed (see restore.go).
type InletInfo struct {
	portal.InletInfo
	State     string    `json:"state"`           // StateRunning or StateFailed
	Error     string    `json:"error,omitempty"` // why it failed
	NextRetry time.Time `json:"next_retry,omitzero"`
}

// OutletInfo is an outlet as the agent holds it, like InletInfo.
type OutletInfo struct {
	portal.OutletInfo
	State     string    `json:"state"`
	Error     string    `json:"error,omitempty"`
	NextRetry time.Time `json:"next_retry,omitzero"`
}

// Inlets lists the running inlets, then the failed ones.
func (a *Agent) Inlets() []InletInfo {
	var out []InletInfo
	for _, in := range a.ports.Inlets() {
		out = append(out, InletInfo{InletInfo: in, State: StateRunning})
	}
	for _, f := range a.conf.failures() {
		if f.inlet != nil {
			out = append(out, InletInfo{InletInfo: portal.InletInfo{InletSpec: *f.inlet}, State: StateFailed, Error: f.err.Error(), NextRetry: f.next})
		}
	}
	return out
}

// Outlets lists the running outlets, then the failed ones.
func (a *Agent) Outlets() []OutletInfo {
	var out []OutletInfo
	for _, o := range a.ports.Outlets() {
		out = append(out, OutletInfo{OutletInfo: o, State: StateRunning})
	}
	for _, f := range a.conf.failures() {
		if f.outlet != nil {
			out = append(out, OutletInfo{OutletInfo: portal.OutletInfo{OutletSpec: *f.outlet}, State: StateFailed, Error: f.err.Error(), NextRetry: f.next})
		}
	}
	return out
}

// RelayInfo describes a relay name this agent claims.
type RelayInfo struct {
	Name    string `json:"name"`
	Claimed bool   `json:"claimed"` // held at the hub right now
	// Error says why it is not held; NextRetry is when the agent tries
	// again (zero while the hub is unreachable: it claims on reconnection).
	Error     string    `json:"error,omitempty"`
	NextRetry time.Time `json:"next_retry,omitzero"`
}

// Relays lists the relay names this agent claims, held or not.
func (a *Agent) Relays() []RelayInfo {
	cs := a.client.Claims()
	out := make([]RelayInfo, 0, len(cs))
	for _, c := range cs {
		out = append(out, RelayInfo{Name: c.Name, Claimed: c.Held, Error: c.Error, NextRetry: c.NextRetry})
	}
	return out
}

// Status is what `agentctl status` shows.
type Status struct {
	Node       string            `json:"node"`
	Project    string            `json:"project"`
	Attributes map[string]string `json:"attributes"`
	Credential CredentialStatus  `json:"credential"`
	Hub        relay.Status      `json:"hub"`
	Relays     []RelayInfo       `json:"relays"`
	Inlets     []InletInfo       `json:"inlets"`
	Outlets    []OutletInfo      `json:"outlets"`
	// Pending lists what keeps the agent from being ready besides its
	// credential, hub link and data path ("name: why"; Agent.Hold).
	Pending []string `json:"pending,omitempty"`
	// Peers are the paths of the inlets' channels, by outlet node, and
	// DirectPaths the counts of channels by path and of direct attempts
	// (docs/direct-paths.md).
	Peers       []portal.PeerPath     `json:"peers"`
	DirectPaths portal.DirectCounters `json:"direct_paths"`
}

// CredentialStatus describes the current credential.
type CredentialStatus struct {
	Expires   time.Time `json:"expires"`
	ExpiresIn string    `json:"expires_in"`
	Serial    string    `json:"serial"`
	// Generation is the member-state generation the credential was issued
	// at: peers refuse it once they have heard of a newer one.
	Generation uint64 `json:"generation"`
}

// Status reports the agent's state.
func (a *Agent) Status() Status {
	st := Status{Node: a.creds.id.ID(), Project: a.creds.enr.Project, Hub: a.client.Status(),
		Relays: a.Relays(), Inlets: a.Inlets(), Outlets: a.Outlets(), Pending: a.holds.pending(),
		Peers: a.ports.Peers(), DirectPaths: a.ports.Direct()}
	if c := a.creds.cred.Load(); c != nil {
		st.Attributes = c.Attributes
		st.Credential = CredentialStatus{
			Expires:    c.Expires().UTC(),
			ExpiresIn:  time.Until(c.Expires()).Round(time.Second).String(),
			Serial:     c.Cert.SerialNumber.Text(16),
			Generation: c.Generation,
		}
	}
	return st
}
