package kube

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/agent/daemon"
)

// ErrNoInterface means no host-side interface of a pod could be found for
// its address (yet).
var ErrNoInterface = errors.New("no host-side interface found for the pod's address")

// HostInterface finds the host-side interface a pod's address sits behind,
// whatever the CNI, from what the host's kernel says:
//
//	route to addr ─ via a veth (routed CNIs: Calico, Cilium in routing mode
//	                give each pod a /32 route through its veth): that veth
//	              ─ via a bridge (bridge CNIs: bridge, flannel's cni0): the
//	                neighbour entry of addr on the bridge gives the pod's MAC,
//	                the bridge's FDB entry for that MAC names the port, which
//	                must be a veth
//	              ─ anything else (a gateway: the pod is not on this node;
//	                the host's own address; a tunnel): not found
//
// On a bridge the neighbour entry exists once the pod has exchanged a
// packet with the host (ARP); until then the pod's interface is not found,
// and the agent binds the address by the rule of address workloads
// (binding.go in package daemon, which reads the pods' own addresses).
func HostInterface(addr netip.Addr) (*daemon.Binding, error) {
	routes, err := netlink.RouteGet(addr.AsSlice())
	if err != nil {
		return nil, fmt.Errorf("route to %s: %w", addr, err)
	}
	if len(routes) == 0 {
		return nil, fmt.Errorf("route to %s: none: %w", addr, ErrNoInterface)
	}
	r := routes[0]
	if r.Gw != nil {
		return nil, fmt.Errorf("route to %s: via gateway %s, not a pod of this node: %w", addr, r.Gw, ErrNoInterface)
	}
	link, err := netlink.LinkByIndex(r.LinkIndex)
	if err != nil {
		return nil, fmt.Errorf("route to %s: interface %d: %w", addr, r.LinkIndex, err)
	}
	switch link.Type() {
	case "veth":
		return &daemon.Binding{Ifindex: link.Attrs().Index, Interface: link.Attrs().Name}, nil
	case "bridge":
		return bridgePort(addr, link)
	}
	return nil, fmt.Errorf("route to %s: through %s (%s), neither a pod's veth nor a bridge: %w", addr, link.Attrs().Name, link.Type(), ErrNoInterface)
}

// bridgePort finds the port of br that addr's MAC was learned on.
func bridgePort(addr netip.Addr, br netlink.Link) (*daemon.Binding, error) {
	neighs, err := netlink.NeighList(br.Attrs().Index, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("neighbours of %s: %w", br.Attrs().Name, err)
	}
	var mac []byte
	for _, n := range neighs {
		if n.IP.Equal(addr.AsSlice()) && len(n.HardwareAddr) == 6 && n.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE|netlink.NUD_NOARP) == 0 {
			mac = n.HardwareAddr
		}
	}
	if mac == nil {
		return nil, fmt.Errorf("%s on bridge %s: no neighbour entry (the pod has not talked to the host yet): %w", addr, br.Attrs().Name, ErrNoInterface)
	}
	fdb, err := netlink.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		return nil, fmt.Errorf("forwarding database of %s: %w", br.Attrs().Name, err)
	}
	var ports []int
	for _, e := range fdb {
		if e.MasterIndex == br.Attrs().Index && e.LinkIndex != br.Attrs().Index && bytes.Equal(e.HardwareAddr, mac) && e.Flags&netlink.NTF_SELF == 0 {
			ports = append(ports, e.LinkIndex)
		}
	}
	if len(ports) != 1 {
		return nil, fmt.Errorf("%s (MAC %x) on bridge %s: %d forwarding entries, want one: %w", addr, mac, br.Attrs().Name, len(ports), ErrNoInterface)
	}
	port, err := netlink.LinkByIndex(ports[0])
	if err != nil {
		return nil, fmt.Errorf("bridge %s port %d: %w", br.Attrs().Name, ports[0], err)
	}
	if port.Type() != "veth" {
		return nil, fmt.Errorf("%s on bridge %s: behind port %s (%s), not a pod's veth: %w", addr, br.Attrs().Name, port.Attrs().Name, port.Type(), ErrNoInterface)
	}
	return &daemon.Binding{Ifindex: port.Attrs().Index, Interface: port.Attrs().Name}, nil
}
