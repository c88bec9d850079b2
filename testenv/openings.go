package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// Opening is something a Seed helper opened in the topology for a
// benchmark (a firewall hole, a route); Close takes it away again. The env's
// Close removes it anyway, with the namespaces.
type Opening struct {
	undo []func() error
}

// Close undoes the opening, last step first. It is idempotent.
func (o *Opening) Close() error {
	var errs []error
	for i := len(o.undo) - 1; i >= 0; i-- {
		errs = append(errs, o.undo[i]())
	}
	o.undo = nil
	return errors.Join(errs...)
}

// nftHandle finds the handle that `nft --echo --handle` prints for a new rule.
var nftHandle = regexp.MustCompile(`# handle (\d+)`)

// AllowInbound opens the firewall of host (AnalysisHost or BankHost) for new
// connections with protocol proto ("tcp" or "udp") to ports arriving on the
// uplink, both to the host itself and forwarded through it, as a user of a
// tunnel would open its port. Close removes exactly those rules.
func (s *Seed) AllowInbound(host *NS, proto string, ports ...int) (*Opening, error) {
	if host != s.AnalysisHost && host != s.BankHost {
		return nil, errors.New("allow inbound: not a company host of the seed")
	}
	if proto != "tcp" && proto != "udp" {
		return nil, fmt.Errorf("allow inbound: invalid protocol %q", proto)
	}
	if len(ports) == 0 {
		return nil, errors.New("allow inbound: no port")
	}
	set := make([]string, len(ports))
	for i, p := range ports {
		if p <= 0 || p > 65535 {
			return nil, fmt.Errorf("allow inbound: invalid port %d", p)
		}
		set[i] = strconv.Itoa(p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := &Opening{}
	for _, chain := range []string{"input", "forward"} {
		// insert puts the rule first, ahead of the uplink's drop.
		rule := fmt.Sprintf("insert rule inet sluice_fw %s iifname %q %s dport { %s } accept comment \"testenv opening\"",
			chain, SeedUplink, proto, strings.Join(set, ", "))
		out, err := host.run(ctx, []string{"nft", "--echo", "--handle", rule}, ProcOptions{})
		if err != nil {
			return nil, errors.Join(fmt.Errorf("allow inbound %s %v in %s: %w", proto, ports, host.name, err), o.Close())
		}
		m := nftHandle.FindSubmatch(out)
		if m == nil {
			return nil, errors.Join(fmt.Errorf("allow inbound %s %v in %s: no rule handle in %q", proto, ports, host.name, out), o.Close())
		}
		handle := string(m[1])
		o.undo = append(o.undo, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := host.run(ctx, []string{"nft", "delete", "rule", "inet", "sluice_fw", chain, "handle", handle}, ProcOptions{}); err != nil {
				return fmt.Errorf("close opening in %s: %w", host.name, err)
			}
			return nil
		})
	}
	return o, nil
}

// RouteToBank routes the bank's container network (10.20.0.0/24) from the
// analysis host through the bank host's uplink: with AllowInbound on the
// bank host for the ports used, the app reaches the PostgreSQL container
// over plain routed TCP (NATed behind the analysis host). Close removes the
// route.
func (s *Seed) RouteToBank() (*Opening, error) {
	dst := bankNet()
	if err := s.AnalysisHost.AddRoute(dst, SeedBankUp); err != nil {
		return nil, err
	}
	return &Opening{undo: []func() error{func() error { return s.AnalysisHost.DeleteRoute(dst) }}}, nil
}

// bankNet is the bank's container network as a CIDR.
func bankNet() string {
	_, n, _ := net.ParseCIDR(SeedBankGW + seedPrefix)
	return n.String()
}

// AddDeviceRoute adds (or replaces) a route to dst, a CIDR, out of the link
// dev without a gateway (such as a tunnel's interface).
func (ns *NS) AddDeviceRoute(dst, dev string) error {
	_, ipnet, err := net.ParseCIDR(dst)
	if err != nil {
		return fmt.Errorf("add route in %s: %w", ns.name, err)
	}
	link, err := ns.nl.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("find link %s in %s: %w", dev, ns.name, err)
	}
	r := &netlink.Route{Dst: ipnet, LinkIndex: link.Attrs().Index, Scope: netlink.SCOPE_LINK}
	if err := ns.nl.RouteReplace(r); err != nil {
		return fmt.Errorf("add route %s dev %s in %s: %w", dst, dev, ns.name, err)
	}
	return nil
}

// DeleteRoute deletes the routes to dst, a CIDR, in the main table. A route
// that is not there is not an error.
func (ns *NS) DeleteRoute(dst string) error {
	_, ipnet, err := net.ParseCIDR(dst)
	if err != nil {
		return fmt.Errorf("delete route in %s: %w", ns.name, err)
	}
	routes, err := ns.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: ipnet}, netlink.RT_FILTER_DST)
	if err != nil {
		return fmt.Errorf("list routes to %s in %s: %w", dst, ns.name, err)
	}
	for _, r := range routes {
		if err := ns.nl.RouteDel(&r); err != nil {
			return fmt.Errorf("delete route %s in %s: %w", dst, ns.name, err)
		}
	}
	return nil
}

// ConfigureLink gives the existing link ifname (made by a process, such as
// a tunnel's interface) the address cidr ("" for none) and sets it up.
func (ns *NS) ConfigureLink(ifname, cidr string) error {
	if err := checkIfName(ifname); err != nil {
		return fmt.Errorf("configure link: %w", err)
	}
	return ns.configure(ifname, cidr)
}

// WaitLink waits until the link ifname exists in ns (made by a process it
// started), or ctx ends.
func (ns *NS) WaitLink(ctx context.Context, ifname string) error {
	for {
		if _, err := ns.nl.LinkByName(ifname); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for link %s in %s: %w", ifname, ns.name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
