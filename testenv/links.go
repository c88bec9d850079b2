package testenv

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// maxIfName is the longest interface name Linux takes (IFNAMSIZ - 1).
const maxIfName = 15

func checkIfName(name string) error {
	if name == "" || len(name) > maxIfName || strings.ContainsAny(name, "/ \t\n:") {
		return fmt.Errorf("invalid interface name %q (1-%d characters, no '/', ':' or spaces)", name, maxIfName)
	}
	return nil
}

// Bridge creates the bridge name in ns with the address cidr (such as
// "10.10.0.1/24"; "" for none) and sets it up. Its MAC address is random
// and set explicitly, as container runtimes do: a bridge whose MAC was never
// set takes the lowest of its ports' MACs, so a container joining with a
// lower one would move the gateway's MAC under the containers that learned
// it, and the host would drop their frames to the old MAC as not its own
// until their neighbour entries expire, seconds later
// (https://github.com/containernetworking/cni/issues/285).
func (e *Env) Bridge(ns *NS, name, cidr string) error {
	if err := checkIfName(name); err != nil {
		return fmt.Errorf("create bridge: %w", err)
	}
	la := netlink.NewLinkAttrs()
	la.Name = name
	la.HardwareAddr = randomMAC()
	if err := ns.nl.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		return fmt.Errorf("create bridge %s in %s: %w", name, ns.name, err)
	}
	return ns.configure(name, cidr)
}

// randomMAC returns a random unicast, locally administered MAC address, as
// the kernel picks for a new bridge.
func randomMAC() net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	rand.Read(mac) // never fails (crypto/rand)
	mac[0] = mac[0]&^0x01 | 0x02
	return mac
}

// Veth creates a veth pair: aName in a with address aCIDR, bName in b with
// address bCIDR (either address may be "" for none), both up.
func (e *Env) Veth(a *NS, aName, aCIDR string, b *NS, bName, bCIDR string) error {
	for _, n := range []string{aName, bName} {
		if err := checkIfName(n); err != nil {
			return fmt.Errorf("create veth: %w", err)
		}
	}
	la := netlink.NewLinkAttrs()
	la.Name = aName
	v := &netlink.Veth{LinkAttrs: la, PeerName: bName, PeerNamespace: netlink.NsFd(b.handle)}
	if err := a.nl.LinkAdd(v); err != nil {
		return fmt.Errorf("create veth %s/%s between %s and %s: %w", aName, bName, a.name, b.name, err)
	}
	if err := a.configure(aName, aCIDR); err != nil {
		return err
	}
	return b.configure(bName, bCIDR)
}

// configure gives the link ifname the address cidr (unless "") and sets it up.
func (ns *NS) configure(ifname, cidr string) error {
	link, err := ns.nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("find link %s in %s: %w", ifname, ns.name, err)
	}
	if cidr != "" {
		addr, err := netlink.ParseAddr(cidr)
		if err != nil {
			return fmt.Errorf("parse address of %s: %w", ifname, err)
		}
		if err := ns.nl.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("add address %s to %s in %s: %w", cidr, ifname, ns.name, err)
		}
	}
	if err := ns.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up in %s: %w", ifname, ns.name, err)
	}
	return nil
}

// AttachToBridge makes the link ifname in ns a port of bridge and sets it up.
func (e *Env) AttachToBridge(ns *NS, ifname, bridge string) error {
	link, err := ns.nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("find link %s in %s: %w", ifname, ns.name, err)
	}
	br, err := ns.nl.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("find bridge %s in %s: %w", bridge, ns.name, err)
	}
	if err := ns.nl.LinkSetMaster(link, br); err != nil {
		return fmt.Errorf("attach %s to %s in %s: %w", ifname, bridge, ns.name, err)
	}
	if err := ns.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up in %s: %w", ifname, ns.name, err)
	}
	return nil
}

// Container is a namespace plugged into a bridge of a host, with its own
// cgroup: processes started in NS go there by default.
type Container struct {
	NS     *NS
	Addr   string // IP address of eth0, without prefix length
	Veth   string // name of the host-side veth, a port of the bridge
	Cgroup string // cgroup v2 directory (absolute path)
}

// Container creates the namespace name with "eth0" (address cidr), the
// peer of a veth whose host side is a port of bridge in host, a default
// route via gateway, and a cgroup of its own.
func (e *Env) Container(host *NS, bridge, name, cidr, gateway string) (*Container, error) {
	ip, _, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, fmt.Errorf("create container %s: %w", name, err)
	}
	ns, err := e.Namespace(name)
	if err != nil {
		return nil, err
	}
	hostSide := e.LinkName()
	if err := e.Veth(host, hostSide, "", ns, "eth0", cidr); err != nil {
		return nil, err
	}
	if err := e.AttachToBridge(host, hostSide, bridge); err != nil {
		return nil, err
	}
	if err := ns.AddRoute("default", gateway); err != nil {
		return nil, err
	}
	cg, err := e.newCgroup("ct-" + name)
	if err != nil {
		return nil, err
	}
	ns.cgroup = cg
	return &Container{NS: ns, Addr: ip.String(), Veth: hostSide, Cgroup: cg}, nil
}

// firewallRules is the nftables script of Firewall; %[1]q is the uplink,
// %[2]s the masquerade statement's flags, %[3]s the forward chain's first
// rule. Replies (established, related) come in; anything else arriving on
// the uplink, for the host or to be forwarded, is dropped. Everything
// leaving through the uplink is masqueraded behind the host's uplink
// address: without flags, Linux keeps the source port when no other
// mapping holds it.
const firewallRules = `table inet sluice_fw {
	chain input {
		type filter hook input priority filter; policy accept;
		iifname %[1]q ct state established,related accept
		iifname %[1]q drop
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		%[3]s
		iifname %[1]q ct state established,related accept
		iifname %[1]q drop
	}
}
table ip sluice_nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname %[1]q masquerade %[2]s
	}
}
`

// Firewall turns host into a NAT gateway to uplink: IP forwarding on,
// masquerade out of uplink, and every new connection arriving on uplink
// dropped, both to the host and through it. It runs `nft -f -` inside host.
func (e *Env) Firewall(host *NS, uplink string) error {
	return e.firewall(host, uplink, "", false)
}

// firewall is Firewall with the masquerade statement's flags (such as
// "random,fully-random"; "" for none), and, with dropInvalid, a forward
// rule that drops the packets conntrack does not track (ct state invalid),
// as a NAT router's firewall does: without it they would leave un-NATed,
// with their private source address.
func (e *Env) firewall(host *NS, uplink, masquerade string, dropInvalid bool) error {
	if err := checkIfName(uplink); err != nil {
		return fmt.Errorf("set firewall: %w", err)
	}
	if masquerade != "" && !validMasquerade.MatchString(masquerade) {
		return fmt.Errorf("set firewall: invalid masquerade flags %q", masquerade)
	}
	if err := host.SetSysctl("net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first := ""
	if dropInvalid {
		first = "ct state invalid drop"
	}
	script := fmt.Sprintf(firewallRules, uplink, masquerade, first)
	_, err := host.run(ctx, []string{"nft", "-f", "-"}, ProcOptions{Stdin: strings.NewReader(script)})
	if err != nil {
		return fmt.Errorf("set firewall in %s: %w", host.name, err)
	}
	return nil
}

// validMasquerade matches the flags of nftables' masquerade statement.
var validMasquerade = regexp.MustCompile(`^(random|fully-random|persistent)(,(random|fully-random|persistent))*$`)
