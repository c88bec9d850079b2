package apitype

import "time"

// InletSpec describes an inlet as `agentctl tcp-inlet create` does (POST
// /v1/tcp-inlets; portal.InletSpec, which checks it).
type InletSpec struct {
	Name string `json:"name"`
	From string `json:"from"`          // listen address, e.g. 0.0.0.0:15432
	Via  string `json:"via,omitempty"` // relay name that leads to the outlet's agent
	// Direct, instead of Via, is the HOST:PORT where the outlet's agent
	// accepts channels itself (agent run --direct-listen), without the hub.
	Direct string `json:"direct,omitempty"`
	Outlet string `json:"outlet,omitempty"` // outlet name on that agent; "" = its only outlet
	Allow  string `json:"allow"`            // policy on the outlet agent's attributes
	// OutletNode, if set, pins the outlet's agent: a channel to any other
	// node is refused, whatever the hub says owns the relay and whatever
	// attributes that node has.
	OutletNode string `json:"outlet_node,omitempty"`
	// Transparent inlets own no listener: From is a virtual service address
	// (IPv4 literal) that the kernel steers to the agent's shared
	// transparent listener for the local workloads AllowLocal permits.
	Transparent bool `json:"transparent,omitempty"`
	// AllowLocal is a policy on the local workload's attributes: required
	// for a transparent inlet; optional for an explicit one, which without
	// it admits anyone who can reach From, and with it only the workloads
	// it permits.
	AllowLocal string `json:"allow_local,omitempty"`
}

// OutletSpec describes an outlet as `agentctl tcp-outlet create` does (POST
// /v1/tcp-outlets; portal.OutletSpec).
type OutletSpec struct {
	Name  string `json:"name"`
	To    string `json:"to"`    // target address, e.g. postgres:5432
	Allow string `json:"allow"` // policy on the inlet agent's attributes
	// NoResolve: create it even if To's host name does not resolve yet.
	NoResolve bool `json:"no_resolve,omitempty"`
}

// CounterValues are a portal's counters (portal.CounterValues).
type CounterValues struct {
	Accepted int64 `json:"accepted"` // connections accepted
	Active   int64 `json:"active"`   // connections now open
	Refused  int64 `json:"refused"`  // refused by policy, on either side
	Failed   int64 `json:"failed"`   // failed for another reason
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`
	// RefusedLocal is, of Refused, what the inlet's --allow-local refused.
	RefusedLocal int64 `json:"refused_local"`
}

// Inlet is a running inlet's specification and state: the answer to POST
// /v1/tcp-inlets (portal.InletInfo).
type Inlet struct {
	InletSpec
	Listening string        `json:"listening"`
	Counters  CounterValues `json:"counters"`
	// Channels is how many secure channels the inlet opened; with warm
	// channels carrying one connection after another it stays below
	// Counters.Accepted. Warm is how many wait unused now.
	Channels int64 `json:"channels_opened"`
	Warm     int   `json:"warm_channels"`
	// WarmReused counts the connections a warm channel carried.
	WarmReused int64 `json:"warm_reused"`
}

// Outlet is a running outlet's specification and state: the answer to POST
// /v1/tcp-outlets (portal.OutletInfo).
type Outlet struct {
	OutletSpec
	Counters CounterValues `json:"counters"`
}

// InletInfo is an inlet as the agent holds it: running, with its counters,
// or configured and failed (GET /v1/tcp-inlets; daemon.InletInfo).
type InletInfo struct {
	Inlet
	State     string    `json:"state"`           // StateRunning or StateFailed
	Error     string    `json:"error,omitempty"` // why it failed
	NextRetry time.Time `json:"next_retry,omitzero"`
}

// OutletInfo is an outlet as the agent holds it, like InletInfo (GET
// /v1/tcp-outlets; daemon.OutletInfo).
type OutletInfo struct {
	Outlet
	State     string    `json:"state"`
	Error     string    `json:"error,omitempty"`
	NextRetry time.Time `json:"next_retry,omitzero"`
}
