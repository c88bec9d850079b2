package daemon

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/loader"
)

// Binding a workload's address to an interface (anti-spoofing):
//
//	create:  the address must be configured on exactly one container's veth
//	         (inside the container, as loader.ContainerVeths reads it): bound
//	         to that veth's host side. None or several: the create fails.
//	sync:    the bound interface still exists: kept, whoever else claims the
//	         address later (that is the attack).
//	         it vanished (the container went): unbound at once; rebound when
//	         exactly one interface that did not exist before it vanished
//	         has the address; until then the workload is unresolved (its
//	         packets are the unknown workload's, and the address stays
//	         nobody's in the kernel).
//
// The kernel refuses packets to services whose source address is bound to
// another interface than the one they came in on (bpf/tc.c, bindings).

// Sentinel errors of binding a workload's address, both wrapped with
// ErrInvalidWorkload as well.
var (
	// ErrAddressNotFound means no container on this host has the address
	// on a veth whose peer is in the agent's namespace.
	ErrAddressNotFound = errors.New("no container interface has this address")
	// ErrAddressAmbiguous means several containers' veths have the address.
	ErrAddressAmbiguous = errors.New("several container interfaces have this address")
)

// Binding is where an address workload's address lives: the host-side
// veth of the container it was found configured in.
type Binding struct {
	Ifindex   int    `json:"ifindex"`
	Interface string `json:"interface"`
}

func (b *Binding) String() string {
	if b == nil {
		return "unbound"
	}
	return fmt.Sprintf("%s (ifindex %d)", b.Interface, b.Ifindex)
}

// containerVeth is a host-side veth and the addresses behind it.
type containerVeth = loader.ContainerVeth

// homes returns the veths behind which addr is configured, leaving out
// those in skip.
func homes(addr netip.Addr, veths []containerVeth, skip map[int]bool) []containerVeth {
	var out []containerVeth
	for _, v := range veths {
		if !skip[v.Ifindex] && slices.Contains(v.Addrs, addr) {
			out = append(out, v)
		}
	}
	return out
}

func names(vs []containerVeth) string {
	n := make([]string, 0, len(vs))
	for _, v := range vs {
		n = append(n, v.Name)
	}
	return strings.Join(n, ", ")
}

// bindNew binds a new workload's address: to the one veth that has it.
func bindNew(addr netip.Addr, veths []containerVeth) (*Binding, error) {
	switch h := homes(addr, veths, nil); len(h) {
	case 1:
		return &Binding{Ifindex: h[0].Ifindex, Interface: h[0].Name}, nil
	case 0:
		return nil, fmt.Errorf("address %s: %w (start the container first, or name it by --interface or --cgroup)", addr, ErrAddressNotFound)
	default:
		return nil, fmt.Errorf("address %s: %w: %s; not guessing which is the workload (name it by --interface or --cgroup)", addr, ErrAddressAmbiguous, names(h))
	}
}

// hostView is what a sync sees of the host.
type hostView struct {
	// Present is every interface of the host now; nil if unknown (then
	// every bound interface is taken to exist).
	Present map[int]bool
	// Before is every interface at the previous sync; nil if unknown
	// (the agent just started).
	Before map[int]bool
	// Veths lists the container veths and their addresses (read once per
	// sync, only if a workload needs it).
	Veths func() ([]containerVeth, error)
}

// followBinding applies the binding rule at a sync to an address workload
// bound to cur (nil: unbound) whose bound interface, if it vanished
// earlier, left suspects: the interfaces that existed before it did (nil:
// not known). It returns the binding now, the suspects to remember, and
// why the workload is unresolved ("" if bound).
func followBinding(addr netip.Addr, cur *Binding, suspects map[int]bool, h hostView) (*Binding, map[int]bool, string) {
	vanished := ""
	if cur != nil {
		if h.Present == nil || h.Present[cur.Ifindex] {
			return cur, nil, ""
		}
		// Its interface vanished: a neighbour that existed meanwhile
		// could have claimed the address; only a new interface may
		// inherit it.
		suspects = h.Before
		vanished = fmt.Sprintf("its interface %s vanished; ", cur.Interface)
	}
	veths, err := h.Veths()
	if err != nil {
		return nil, suspects, vanished + "cannot read the containers' addresses: " + err.Error()
	}
	switch c := homes(addr, veths, suspects); len(c) {
	case 1:
		return &Binding{Ifindex: c[0].Ifindex, Interface: c[0].Name}, nil, ""
	case 0:
		if suspects != nil {
			return nil, suspects, vanished + "waiting for a new container interface with address " + addr.String() +
				" (interfaces that existed when the bound one vanished are not eligible)"
		}
		return nil, nil, vanished + "no container interface has address " + addr.String()
	default:
		return nil, suspects, vanished + "several container interfaces have address " + addr.String() + " (" + names(c) + "); not guessing"
	}
}
