package loader

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The TC program only marks steered packets; this policy route delivers
// marked packets locally, so that they reach the socket bpf_sk_assign chose
// although no host owns the service address. See the bpf_sk_assign entry of
// bpf-helpers(7): "when combined with appropriate routing configuration to
// receive the packet towards the socket".
//
//	ip rule add fwmark MARK/MASK lookup TABLE pref PRIORITY
//	ip route add local 0.0.0.0/0 dev lo table TABLE

func policyRule(o Options) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = unix.AF_INET
	r.Priority = o.RulePriority
	r.Mark = o.Mark
	mask := o.MarkMask
	r.Mask = &mask
	r.Table = o.Table
	return r
}

func localRoute(o Options) (*netlink.Route, error) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("find lo: %w", err)
	}
	return &netlink.Route{
		LinkIndex: lo.Attrs().Index,
		Dst:       &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)},
		Table:     o.Table,
		Type:      unix.RTN_LOCAL,
		Scope:     netlink.SCOPE_HOST,
	}, nil
}

// installRoute adds the rule and the route, keeping them if present.
func installRoute(o Options) error {
	rt, err := localRoute(o)
	if err != nil {
		return err
	}
	if err := netlink.RouteReplace(rt); err != nil {
		return capabilityError(fmt.Errorf("add local route to table %d: %w", o.Table, err), "CAP_NET_ADMIN")
	}
	if err := netlink.RuleAdd(policyRule(o)); err != nil && !errors.Is(err, unix.EEXIST) {
		return capabilityError(fmt.Errorf("add policy rule for mark %#x: %w", o.Mark, err), "CAP_NET_ADMIN")
	}
	return nil
}

// removeRoute deletes the rule, the route and the backstop rules; missing
// ones are fine.
func removeRoute(o Options) error {
	errs := []error{removeBackstop(o)}
	if err := netlink.RuleDel(policyRule(o)); err != nil && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("delete policy rule: %w", err))
	}
	rt, err := localRoute(o)
	if err == nil {
		err = netlink.RouteDel(rt)
	}
	if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("delete local route: %w", err))
	}
	return errors.Join(errs...)
}
