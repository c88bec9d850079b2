package testenv

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
)

// Routed pods: the shape many Kubernetes CNIs (Calico, Cilium) give a pod,
// next to the bridge of Container. No bridge: the pod's host-side veth is
// an ordinary L3 interface with no address, the host routes the pod's /32
// to it, and the pod's default route goes to a link-local gateway that the
// host answers.
const (
	// RoutedGateway is the pod's default gateway (Calico's): a /32 on the
	// host's loopback, so that the host answers the pod's ARP request for
	// it on the veth (a local address, Linux's default arp_ignore=0).
	RoutedGateway = "169.254.1.1"
	// RoutedVethPrefix starts the host-side names NewRouted gives the
	// pods' veths, as Calico's "cali": what `agent run --routed` matches.
	RoutedVethPrefix = "cali"
)

// Routed is a host with two routed pods and no bridge:
//
//	host (lo 169.254.1.1/32; 10.30.0.2/32 dev caliX; 10.30.0.3/32 dev caliY)
//	├── caliX ── pod "a": eth0 10.30.0.2/32, default via 169.254.1.1
//	└── caliY ── pod "b": eth0 10.30.0.3/32, default via 169.254.1.1
type Routed struct {
	Host *NS
	A, B *Container // Veth is the host side, a port of no bridge
}

// Addresses of NewRouted's pods.
const (
	RoutedAddrA = "10.30.0.2"
	RoutedAddrB = "10.30.0.3"
)

// NewRouted builds a Routed topology in e, the host-side veths named
// RoutedVethPrefix followed by the run id and a number.
func NewRouted(e *Env) (*Routed, error) {
	host, err := e.Namespace("rhost")
	if err != nil {
		return nil, err
	}
	r := &Routed{Host: host}
	if r.A, err = e.RoutedPod(host, e.RoutedVethName(), "poda", RoutedAddrA); err != nil {
		return nil, err
	}
	if r.B, err = e.RoutedPod(host, e.RoutedVethName(), "podb", RoutedAddrB); err != nil {
		return nil, err
	}
	return r, nil
}

// RoutedVethName returns a fresh host-side veth name for a routed pod,
// RoutedVethPrefix and a number unique in this run.
func (e *Env) RoutedVethName() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.links++
	return fmt.Sprintf("%s%s%d", RoutedVethPrefix, e.runID, e.links)
}

// RoutedPod creates the namespace name with "eth0" holding addr/32, the
// peer of the veth hostSide in host (no address, no bridge), the host's
// route to addr/32 through hostSide, the pod's default route via
// RoutedGateway (given to host's loopback if it has not got it yet), and a
// cgroup of its own. The pod's Container has Veth set to hostSide.
func (e *Env) RoutedPod(host *NS, hostSide, name, addr string) (*Container, error) {
	if ip := net.ParseIP(addr); ip == nil || ip.To4() == nil {
		return nil, fmt.Errorf("create routed pod %s: %q is not an IPv4 address", name, addr)
	}
	if err := host.ensureLoopbackAddr(RoutedGateway + "/32"); err != nil {
		return nil, err
	}
	ns, err := e.Namespace(name)
	if err != nil {
		return nil, err
	}
	if err := e.Veth(host, hostSide, "", ns, "eth0", addr+"/32"); err != nil {
		return nil, err
	}
	if err := host.AddDeviceRoute(addr+"/32", hostSide); err != nil {
		return nil, err
	}
	if err := ns.AddDeviceRoute(RoutedGateway+"/32", "eth0"); err != nil {
		return nil, err
	}
	if err := ns.AddRoute("default", RoutedGateway); err != nil {
		return nil, err
	}
	cg, err := e.newCgroup("ct-" + name)
	if err != nil {
		return nil, err
	}
	ns.cgroup = cg
	return &Container{NS: ns, Addr: addr, Veth: hostSide, Cgroup: cg}, nil
}

// ensureLoopbackAddr gives lo in ns the address cidr unless it has it.
func (ns *NS) ensureLoopbackAddr(cidr string) error {
	lo, err := ns.nl.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in %s: %w", ns.name, err)
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return fmt.Errorf("parse address %s: %w", cidr, err)
	}
	have, err := ns.nl.AddrList(lo, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of lo in %s: %w", ns.name, err)
	}
	for _, h := range have {
		if h.IPNet.String() == a.IPNet.String() {
			return nil
		}
	}
	if err := ns.nl.AddrAdd(lo, a); err != nil {
		return fmt.Errorf("add %s to lo in %s: %w", cidr, ns.name, err)
	}
	return ns.nl.LinkSetUp(lo)
}
