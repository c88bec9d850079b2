// Package loader turns the compiled BPF objects into attached, pinned
// programs: it loads them, attaches the TC program to container veths (TCX,
// or clsact where TCX is missing), pins maps and links under PinDir so that
// the data path outlives the agent (fail closed), adopts the pins when the
// agent restarts, probes the kernel, and removes everything on cleanup.
//
// Only this package and package maps touch BPF objects.
package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"strings"

	"github.com/cilium/ebpf"
)

// Defaults of Options.
const (
	// DefaultPinDir is where maps and links are pinned.
	DefaultPinDir = "/sys/fs/bpf/sluice"
	// DefaultMark is the packet mark that the TC program sets on steered
	// packets, and the policy route delivers locally.
	DefaultMark uint32 = 0x51ce0000
	// DefaultMarkMask is the part of the mark the policy rule matches.
	DefaultMarkMask uint32 = 0xffff0000
	// DefaultTable is the routing table holding the local route.
	DefaultTable = 0x51ce
	// DefaultRulePriority is the policy rule's priority: after the local
	// table (0), before main (32766).
	DefaultRulePriority = 9051
)

// Sentinel errors callers branch on.
var (
	// ErrNotSupported means the kernel cannot run the data path; the error
	// names the missing feature.
	ErrNotSupported = errors.New("kernel cannot run the BPF data path")
	// ErrBusy means another agent holds the pin directory.
	ErrBusy = errors.New("another agent holds the BPF pin directory")
	// ErrIncompatible means pins from another version are in the way; run
	// `agent cleanup`.
	ErrIncompatible = errors.New("pinned BPF objects do not match this agent")
	// ErrNotAttached means the device has no program of ours.
	ErrNotAttached = errors.New("no data path program attached to this device")
	// ErrEphemeralPins means the pins would not outlive the agent (PinLife),
	// and Options.RequirePersistentPins asked for pins that do.
	ErrEphemeralPins = errors.New("the BPF pins would not outlive the agent")
	// ErrRelayNotSupported means the kernel cannot run the hub's sockmap
	// relay (OpenRelay); the hub splices instead. It wraps
	// ebpf.ErrNotSupported.
	ErrRelayNotSupported = fmt.Errorf("kernel cannot redirect between sockets (sockhash, sk_skb): %w", ebpf.ErrNotSupported)
)

// Options configure Open. The zero value uses the defaults above.
type Options struct {
	PinDir       string // DefaultPinDir
	Mark         uint32 // DefaultMark
	MarkMask     uint32 // DefaultMarkMask
	Table        int    // DefaultTable
	RulePriority int    // DefaultRulePriority
	// NoTCX attaches through clsact even where TCX works (tests, old tools).
	NoTCX bool
	// VerifierLog keeps the verifier's full log in load errors.
	VerifierLog bool
	// RequirePersistentPins makes Open fail with ErrEphemeralPins where
	// the pins would go with the agent (PinLife says "ephemeral"): the
	// kernel would then stop refusing connections once it stopped.
	RequirePersistentPins bool
}

// What PinLife says of pins.
const (
	PinsPersistent = "persistent" // they outlive the agent
	PinsEphemeral  = "ephemeral"  // they go with the agent's mount namespace
	PinsUnknown    = "unknown"    // the agent cannot tell (taken as persistent)
)

// Pins says whether the data path's pins outlive the agent, and why.
type Pins struct {
	State  string `json:"state"` // PinsPersistent, PinsEphemeral or PinsUnknown
	Reason string `json:"reason"`
}

func (p Pins) String() string { return p.State + " (" + p.Reason + ")" }

func (o *Options) defaults() {
	if o.PinDir == "" {
		o.PinDir = DefaultPinDir
	}
	if o.Mark == 0 {
		o.Mark = DefaultMark
	}
	if o.MarkMask == 0 {
		o.MarkMask = DefaultMarkMask
	}
	if o.Table == 0 {
		o.Table = DefaultTable
	}
	if o.RulePriority == 0 {
		o.RulePriority = DefaultRulePriority
	}
}

// Role says which program a device gets.
type Role string

// The roles.
const (
	// Port is a container's host-side veth, a bridge port: policy verdicts
	// and resets (program steer).
	Port Role = "steer"
	// Bridge is the bridge the container veths are ports of: socket
	// assignment to the agent (program assign).
	Bridge Role = "assign"
	// Routed is a pod's routed host-side veth, a port of no bridge (Calico,
	// Cilium): policy verdicts, resets and socket assignment in one
	// program (routed), since the packet goes from the veth's ingress
	// straight to local delivery.
	Routed Role = "routed"
)

// known reports whether r is one of the roles.
func (r Role) known() bool { return r == Port || r == Bridge || r == Routed }

// Attachment describes one attached program.
type Attachment struct {
	Device  string `json:"device"`
	Ifindex int    `json:"ifindex"`
	Role    Role   `json:"role"`
	Hook    string `json:"hook"` // "tcx/ingress" or "clsact/ingress"
	Program uint32 `json:"program_id"`
	Link    uint32 `json:"link_id,omitempty"` // 0 for clsact filters
	Pinned  string `json:"pinned,omitempty"`
}

// ContainerVeth is a host-side veth whose peer is in a container's network
// namespace, and the IPv4 addresses configured on that peer inside the
// container (ContainerVeths).
type ContainerVeth struct {
	Ifindex int          `json:"ifindex"` // the host-side veth
	Name    string       `json:"name"`    // its name in the host namespace
	Addrs   []netip.Addr `json:"addrs"`   // IPv4 addresses on the peer, sorted
}

// Devices says which devices the data path follows (Datapath.FollowDevices).
type Devices struct {
	// Bridges are the bridges whose ports (container veths) get steer and
	// which themselves get assign; none means every bridge.
	Bridges []string
	// Routed are name patterns (path.Match: "cali*", "lxc*") of routed
	// veths: a pod's host-side veth that is a port of no bridge, the host
	// routing the pod's address to it (Calico, Cilium). Each veth that
	// matches and is not a bridge port gets program routed. None means no
	// routed veth is followed.
	Routed []string
}

// ErrBadPattern means a routed veth pattern is malformed.
var ErrBadPattern = errors.New("bad routed veth pattern")

// CheckRoutedPattern checks a Devices.Routed pattern.
func CheckRoutedPattern(p string) error {
	if p == "" {
		return fmt.Errorf("routed veth pattern is empty: %w", ErrBadPattern)
	}
	if len(p) > 15 && !strings.ContainsAny(p, "*?[\\") {
		return fmt.Errorf("routed veth pattern %q: longer than an interface name (15): %w", p, ErrBadPattern)
	}
	if strings.Contains(p, "/") {
		return fmt.Errorf("routed veth pattern %q: interface names have no '/': %w", p, ErrBadPattern)
	}
	if _, err := path.Match(p, ""); err != nil {
		return fmt.Errorf("routed veth pattern %q: %w: %w", p, err, ErrBadPattern)
	}
	return nil
}

func (d Devices) check() error {
	for _, p := range d.Routed {
		if err := CheckRoutedPattern(p); err != nil {
			return err
		}
	}
	return nil
}

// matchAny reports whether name matches one of the patterns (checked).
func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}
