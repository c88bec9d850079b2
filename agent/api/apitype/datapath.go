package apitype

import "fmt"

// Workload is a local container, named by exactly one of its IPv4 address,
// its host-side veth, or a cgroup of its processes, with the attributes
// transparent inlets' --allow-local policies see (POST /v1/workloads;
// daemon.Workload, which checks it).
type Workload struct {
	Name      string `json:"name"`
	Address   string `json:"address,omitempty"`   // the container's IPv4 address
	Interface string `json:"interface,omitempty"` // its host-side veth
	// Cgroup is the absolute path of a cgroup v2 directory whose processes'
	// network namespaces select the workload.
	Cgroup     string            `json:"cgroup,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
	// Bound is, for a workload named by address, the host-side interface
	// its address is bound to: set by the agent, never taken from a
	// request.
	Bound *Binding `json:"bound,omitempty"`
	// Source is who keeps the workload: empty for the operator (the local
	// API, the configuration file), "kubernetes" for a pod of the agent's
	// node (agent run --kubernetes); set by the agent.
	Source string `json:"source,omitempty"`
}

// Binding is where an address workload's address lives: the host-side
// veth of the container it was found configured in (daemon.Binding).
type Binding struct {
	Ifindex   int    `json:"ifindex"`
	Interface string `json:"interface"`
}

// String says where the address is bound, or "unbound" for nil.
func (b *Binding) String() string {
	if b == nil {
		return "unbound"
	}
	return fmt.Sprintf("%s (ifindex %d)", b.Interface, b.Ifindex)
}

// WorkloadInfo is a workload and the number the kernel knows it by (GET
// and POST /v1/workloads; daemon.WorkloadInfo).
type WorkloadInfo struct {
	Workload
	Number uint32 `json:"number"`
	// Unresolved says why a workload named by address is bound to no
	// interface now; its packets are the unknown workload's until it is.
	Unresolved string `json:"unresolved,omitempty"`
}

// DatapathStatus is what `agentctl datapath status` shows (GET
// /v1/datapath; daemon.DatapathStatus).
type DatapathStatus struct {
	Enabled bool   `json:"enabled"`
	Reason  string `json:"reason,omitempty"` // why not enabled
	PinDir  string `json:"pin_dir,omitempty"`
	// Pins says whether the pins outlive the agent (fail closed holds only
	// if they do), and why.
	Pins     *Pins  `json:"pins,omitempty"`
	Listener string `json:"listener,omitempty"` // the transparent listener
	// Acceleration is "on", or "off" and why; Accelerated counts the
	// connections whose agent-to-app bytes skipped TCP.
	Acceleration string         `json:"acceleration,omitempty"`
	Accelerated  uint64         `json:"accelerated_connections"`
	Attachments  []Attachment   `json:"attachments"`
	Maps         []MapSize      `json:"maps"`
	Portals      []PortalStatus `json:"portals"`
	Error        string         `json:"error,omitempty"` // reading the kernel's state failed
}

// Pins says whether the data path's pins outlive the agent, and why
// (loader.Pins).
type Pins struct {
	State  string `json:"state"` // "persistent", "ephemeral" or "unknown"
	Reason string `json:"reason"`
}

// String is the state and why, as `agentctl datapath status` shows it.
func (p Pins) String() string { return p.State + " (" + p.Reason + ")" }

// Attachment describes one attached program (loader.Attachment).
type Attachment struct {
	Device  string `json:"device"`
	Ifindex int    `json:"ifindex"`
	Role    string `json:"role"` // "steer" (a container's veth) or "assign" (the bridge)
	Hook    string `json:"hook"` // "tcx/ingress" or "clsact/ingress"
	Program uint32 `json:"program_id"`
	Link    uint32 `json:"link_id,omitempty"` // 0 for clsact filters
	Pinned  string `json:"pinned,omitempty"`
}

// MapSize is a BPF map's fill (maps.Size).
type MapSize struct {
	Name    string `json:"name"`
	Entries int    `json:"entries"`
	Max     uint32 `json:"max"`
}

// PortalStatus is an inlet with a portal number (transparent, or explicit
// with --allow-local) as the kernel sees it (daemon.PortalStatus).
type PortalStatus struct {
	Inlet    string         `json:"inlet"`
	Kind     string         `json:"kind"`    // "transparent" or "explicit"
	Service  string         `json:"service"` // the service address, or the explicit inlet's --from
	Portal   uint32         `json:"portal"`
	Counters PortalCounters `json:"counters"`
}

// PortalCounters are a portal's kernel counters, summed over CPUs
// (maps.PortalCounters).
type PortalCounters struct {
	Steered    uint64 `json:"steered"`     // connections handed to the agent
	Refused    uint64 `json:"refused"`     // resets sent to containers
	NoListener uint64 `json:"no_listener"` // of those, because no agent listened
	Packets    uint64 `json:"packets"`     // packets from allowed workloads
	Bytes      uint64 `json:"bytes"`       // their bytes
	// Spoofed counts, of the refused, the packets whose source address is
	// bound to another interface than the one they came in on.
	Spoofed uint64 `json:"spoofed"`
}
