package loader

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The backstop. On a bridge, a packet to a transparent service that no
// steer program marked (its veth appeared while no agent ran) still meets
// assign on the bridge, which resets it. A routed veth has no such second
// hook: the packet of a pod whose veth has no program yet (created while
// the agent was dead, or in the instant before the agent attaches) is
// routed like any other, out of the default route, in plaintext. So, with
// routed veths followed, the loader adds one policy rule per transparent
// service, right after the steer rule:
//
//	ip rule add to ADDR/32 ipproto tcp dport PORT prohibit pref PRIORITY+1
//
// Marked packets match the steer rule first and are delivered locally;
// unmarked TCP to the service's address and port is refused by the kernel
// (ICMP "communication administratively prohibited" to a forwarded
// packet's sender, EACCES to the host's own sockets), never forwarded.
// Like the pins, the rules outlive the agent; Cleanup removes them.

// backstopPriority is the priority of the backstop rules.
func backstopPriority(o Options) int { return o.RulePriority + 1 }

func backstopRule(o Options, svc netip.AddrPort) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = unix.AF_INET
	r.Priority = backstopPriority(o)
	r.Dst = &net.IPNet{IP: svc.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)}
	r.IPProto = unix.IPPROTO_TCP
	r.Dport = netlink.NewRulePortRange(svc.Port(), svc.Port())
	r.Type = unix.RTN_PROHIBIT
	return r
}

// backstopRules lists the backstop rules in place. (netlink's rule list
// does not report a rule's action: the priority, which is ours, and the
// shape tell them.)
func backstopRules(o Options) (map[netip.AddrPort]bool, error) {
	rules, err := netlink.RuleListFiltered(unix.AF_INET, &netlink.Rule{Priority: backstopPriority(o)}, netlink.RT_FILTER_PRIORITY)
	if err != nil {
		return nil, fmt.Errorf("list backstop rules: %w", err)
	}
	out := map[netip.AddrPort]bool{}
	for _, r := range rules {
		if r.IPProto != unix.IPPROTO_TCP || r.Dst == nil || r.Dport == nil {
			continue
		}
		a, ok := netip.AddrFromSlice(r.Dst.IP.To4())
		if !ok {
			continue
		}
		out[netip.AddrPortFrom(a, r.Dport.Start)] = true
	}
	return out, nil
}

// SetBackstop makes the backstop rules exactly one per service in svcs
// (the transparent services; IPv4). See the comment above.
func (d *Datapath) SetBackstop(svcs []netip.AddrPort) error { return syncBackstop(d.opts, svcs) }

// removeBackstop deletes every backstop rule.
func removeBackstop(o Options) error { return syncBackstop(o, nil) }

// syncBackstop adds the rules of svcs that are missing and deletes the
// others.
func syncBackstop(o Options, svcs []netip.AddrPort) error {
	have, err := backstopRules(o)
	if err != nil {
		return err
	}
	want := map[netip.AddrPort]bool{}
	var errs []error
	for _, s := range svcs {
		if !s.Addr().Is4() {
			continue
		}
		want[s] = true
		if have[s] {
			continue
		}
		if err := netlink.RuleAdd(backstopRule(o, s)); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("add backstop rule for %s: %w", s, err))
		}
	}
	for s := range have {
		if !want[s] {
			if err := netlink.RuleDel(backstopRule(o, s)); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete backstop rule for %s: %w", s, err))
			}
		}
	}
	return errors.Join(errs...)
}
