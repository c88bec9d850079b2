// Package portal carries TCP connections through the hub: an inlet accepts
// local connections and opens a secure channel to an outlet, which connects to
// the target service. Bytes move through package pipe.
package portal

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"sync/atomic"

	"github.com/sluicehq/sluice/agent/pipe"
	"github.com/sluicehq/sluice/agent/policy"
	"github.com/sluicehq/sluice/agent/wire"
)

// Sentinel errors callers branch on.
var (
	// ErrExists means a portal of that name already exists.
	ErrExists = errors.New("portal already exists")
	// ErrNotFound means there is no portal of that name.
	ErrNotFound = errors.New("no such portal")
	// ErrInvalid means a portal specification is not valid.
	ErrInvalid = errors.New("invalid portal specification")
	// ErrTargetUnreachable means the outlet could not connect to its target.
	ErrTargetUnreachable = errors.New("outlet could not connect to its target")
	// ErrClosed means the manager was closed.
	ErrClosed = errors.New("portal manager is closed")
)

// InletSpec describes an inlet as `agentctl tcp-inlet create` does.
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
	// node is refused (ErrWrongPeer), whatever the hub says owns the relay
	// and whatever attributes that node has.
	OutletNode string `json:"outlet_node,omitempty"`
	// Transparent inlets own no listener: From is a virtual service address
	// (IPv4 literal) that the kernel steers to the agent's shared
	// transparent listener for the local workloads AllowLocal permits.
	Transparent bool `json:"transparent,omitempty"`
	// AllowLocal is a policy on the local workload's attributes: required
	// for a transparent inlet; optional for an explicit one, which without
	// it admits anyone who can reach From (any container, the host, other
	// hosts), and with it only the workloads it permits (the agent's BPF
	// data path tells which workload a connection comes from).
	AllowLocal string `json:"allow_local,omitempty"`
}

// OutletSpec describes an outlet as `agentctl tcp-outlet create` does.
type OutletSpec struct {
	Name  string `json:"name"`
	To    string `json:"to"`    // target address, e.g. postgres:5432
	Allow string `json:"allow"` // policy on the inlet agent's attributes
	// NoResolve: create it even if To's host name does not resolve yet
	// (CheckTargetResolves).
	NoResolve bool `json:"no_resolve,omitempty"`
}

var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$`)

// nodeIDRe matches a node ID (identity.NodeID).
var nodeIDRe = regexp.MustCompile(`^[0-9a-f]{32}$`)

// CheckName checks a name by the rules of portal names; kind names it in
// the error, which wraps invalid (for a portal's, ErrInvalid).
func CheckName(kind, name string, invalid error) error {
	if !nameRe.MatchString(name) {
		return fmt.Errorf("%s name %q: use letters, digits and _ . - (at most 63), starting with a letter or digit: %w", kind, name, invalid)
	}
	return nil
}

func checkName(kind, name string) error { return CheckName(kind, name, ErrInvalid) }

func checkHostPort(flag, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: want HOST:PORT: %w", flag, addr, ErrInvalid)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%s %q: port must be a number from 0 to 65535: %w", flag, addr, ErrInvalid)
	}
	return nil
}

func parsePolicy(flag, expr string) (*policy.Policy, error) {
	if expr == "" {
		return nil, fmt.Errorf("%s is required (policies are default deny), e.g. %s postgres-inlet: %w", flag, flag, ErrInvalid)
	}
	p, err := policy.Parse(expr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", flag, err, ErrInvalid)
	}
	return p, nil
}

// Check reports what is wrong with an inlet specification, as creating it
// would (its name, addresses and policies), without creating it.
func (s *InletSpec) Check() error {
	_, err := s.check()
	return err
}

func (s *InletSpec) check() (*policy.Policy, error) {
	if err := checkName("inlet", s.Name); err != nil {
		return nil, err
	}
	if err := s.checkFrom(); err != nil {
		return nil, err
	}
	switch {
	case s.Via != "" && s.Direct != "":
		return nil, fmt.Errorf("--via and --direct: give one, the relay or the outlet agent's direct address: %w", ErrInvalid)
	case s.Direct != "":
		if err := checkHostPort("--direct", s.Direct); err != nil {
			return nil, err
		}
	default:
		if err := wire.CheckRelayName(s.Via); err != nil {
			return nil, fmt.Errorf("--via: %w: %w", err, ErrInvalid)
		}
	}
	if s.Outlet != "" {
		if err := checkName("outlet", s.Outlet); err != nil {
			return nil, err
		}
	}
	if s.OutletNode != "" && !nodeIDRe.MatchString(s.OutletNode) {
		return nil, fmt.Errorf("--outlet-node %q: want a node ID, 32 lower-case hex digits (agentctl status on the outlet's host): %w", s.OutletNode, ErrInvalid)
	}
	return parsePolicy("--allow", s.Allow)
}

// checkFrom checks --from, and --allow-local for a transparent inlet.
func (s *InletSpec) checkFrom() error {
	if !s.Transparent {
		if err := checkHostPort("--from", s.From); err != nil || s.AllowLocal == "" {
			return err
		}
		if _, err := ExplicitAddr(s.From); err != nil {
			return err
		}
		if _, err := policy.Parse(s.AllowLocal); err != nil {
			return fmt.Errorf("--allow-local: %w: %w", err, ErrInvalid)
		}
		return nil
	}
	if _, err := ServiceAddr(s.From); err != nil {
		return err
	}
	if s.AllowLocal == "" {
		return fmt.Errorf("--allow-local is required for a transparent inlet (policies are default deny), e.g. --allow-local 'app == \"analytics\"': %w", ErrInvalid)
	}
	if _, err := policy.Parse(s.AllowLocal); err != nil {
		return fmt.Errorf("--allow-local: %w: %w", err, ErrInvalid)
	}
	return nil
}

// ServiceAddr parses a transparent inlet's --from: a virtual IPv4 service
// address with a port, e.g. 10.200.0.10:5432.
func ServiceAddr(from string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(from)
	switch {
	case err != nil:
		return netip.AddrPort{}, fmt.Errorf("--from %q: a transparent inlet needs the service's IPv4 address and port, e.g. 10.200.0.10:5432: %w", from, ErrInvalid)
	case !ap.Addr().Is4() || ap.Addr().IsUnspecified():
		return netip.AddrPort{}, fmt.Errorf("--from %q: a transparent inlet needs one IPv4 address (not 0.0.0.0, not IPv6): %w", from, ErrInvalid)
	case ap.Port() == 0:
		return netip.AddrPort{}, fmt.Errorf("--from %q: a transparent inlet needs a port other than 0: %w", from, ErrInvalid)
	}
	return ap, nil
}

// ExplicitAddr parses the --from of an explicit inlet with --allow-local:
// an IPv4 address of this host, or 0.0.0.0 for all of them, and a port
// other than 0 (the kernel's data path carries IPv4 and needs the port).
func ExplicitAddr(from string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(from)
	switch {
	case err != nil || !ap.Addr().Is4():
		return netip.AddrPort{}, fmt.Errorf("--from %q: an explicit inlet with --allow-local needs an IPv4 address of this host (or 0.0.0.0) and a port, e.g. 10.10.0.1:15432: %w", from, ErrInvalid)
	case ap.Port() == 0:
		return netip.AddrPort{}, fmt.Errorf("--from %q: an explicit inlet with --allow-local needs a port other than 0: %w", from, ErrInvalid)
	}
	return ap, nil
}

func (s *OutletSpec) check() (*policy.Policy, error) {
	if err := checkName("outlet", s.Name); err != nil {
		return nil, err
	}
	if err := checkHostPort("--to", s.To); err != nil {
		return nil, err
	}
	return parsePolicy("--allow", s.Allow)
}

// Counters are a portal's live statistics.
type Counters struct {
	Accepted atomic.Int64 // connections accepted
	Active   atomic.Int64 // connections now open
	Refused  atomic.Int64 // refused by policy, on either side
	Failed   atomic.Int64 // failed for another reason
	Bytes    pipe.Stats   // AToB: toward the target; BToA: from it. Live.
	// RefusedLocal counts, of Refused, the connections the inlet's
	// --allow-local refused (the workload they came from); the rest the
	// peer policy refused, on either side.
	RefusedLocal atomic.Int64
}

// CounterValues is a snapshot of Counters.
type CounterValues struct {
	Accepted int64 `json:"accepted"`
	Active   int64 `json:"active"`
	Refused  int64 `json:"refused"`
	Failed   int64 `json:"failed"`
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`
	// RefusedLocal is, of Refused, what --allow-local refused.
	RefusedLocal int64 `json:"refused_local"`
}

// Snapshot reads the counters.
func (c *Counters) Snapshot() CounterValues {
	return CounterValues{c.Accepted.Load(), c.Active.Load(), c.Refused.Load(), c.Failed.Load(), c.Bytes.AToB.Load(), c.Bytes.BToA.Load(),
		c.RefusedLocal.Load()}
}

// InletInfo is an inlet's specification and state.
type InletInfo struct {
	InletSpec
	Listening string        `json:"listening"`
	Counters  CounterValues `json:"counters"`
	// Channels is how many secure channels the inlet opened; with warm
	// channels carrying one connection after another it stays below
	// Counters.Accepted. Warm is how many wait unused now.
	Channels int64 `json:"channels_opened"`
	Warm     int   `json:"warm_channels"`
	// WarmReused counts the connections a warm channel carried (no new
	// handshake).
	WarmReused int64 `json:"warm_reused"`
}

// OutletInfo is an outlet's specification and state.
type OutletInfo struct {
	OutletSpec
	Counters CounterValues `json:"counters"`
}
