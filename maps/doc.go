// Package maps is the one typed Go view of the data path's BPF maps: keys
// and values as Go types (netip addresses, portal numbers), checked before
// any syscall, written in batches. The C layouts come from bpf2go -type in
// package loader; nothing here copies them by hand.
package maps

import (
	"errors"
	"net/netip"
)

// ErrInvalid means a key or value cannot be represented in the maps (an
// IPv6 address, a portal number out of range, ...).
var ErrInvalid = errors.New("invalid data path map entry")

// PortalCounters are a portal's kernel counters, summed over CPUs.
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

// Size is a map's fill.
type Size struct {
	Name    string `json:"name"`
	Entries int    `json:"entries"`
	Max     uint32 `json:"max"`
}

// Endpoint is where a workload's packets come from: a device (Ifindex) and
// a source address. An invalid (zero) Addr means any address behind the
// device. Ifindex is required: an address alone names nobody, since any
// container can claim it (anti-spoofing, see Bindings).
type Endpoint struct {
	Ifindex uint32
	Addr    netip.Addr
}

// Verdict allows workload Workload to use portal Portal.
type Verdict struct {
	Workload uint32 `json:"workload"`
	Portal   uint32 `json:"portal"`
}
