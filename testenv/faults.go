package testenv

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// Fault injection for the chaos suite (testenv/chaos): processes killed
// whole, links down, packets dropped, connection tracking forgotten. This
// kernel has no netem, so losses are nftables rules (numgen random).

// Signal sends sig to the process (nothing if it has exited); unlike Stop
// it does not wait, nor follow up with SIGKILL.
func (p *Process) Signal(sig syscall.Signal) error { return p.signal(sig) }

// KillAll kills every process in the container's cgroup with SIGKILL, as a
// crash of the whole container would, and waits until they are gone. It
// signals each process rather than write cgroup.kill: on Linux 6.18 a
// process later cloned into a cgroup that cgroup.kill emptied is killed
// at birth (the cgroup's kill sequence is compared with its parent's).
func (c *Container) KillAll() error {
	deadline := time.Now().Add(cgroupKillWait)
	for {
		populated, err := cgroupPopulated(c.Cgroup)
		if err != nil {
			return fmt.Errorf("kill container %s: %w", c.NS.name, err)
		}
		if !populated {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill container %s: processes left after %v", c.NS.name, cgroupKillWait)
		}
		killEachProcess(c.Cgroup)
		time.Sleep(10 * time.Millisecond)
	}
}

// SetLinkUp sets the link ifname of ns up or down. A link set down loses
// its routes: set them again after it is up (AddRoute), as a DHCP client
// would.
func (ns *NS) SetLinkUp(ifname string, up bool) error {
	link, err := ns.nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("find link %s in %s: %w", ifname, ns.name, err)
	}
	if up {
		err = ns.nl.LinkSetUp(link)
	} else {
		err = ns.nl.LinkSetDown(link)
	}
	if err != nil {
		return fmt.Errorf("set link %s up=%v in %s: %w", ifname, up, ns.name, err)
	}
	return nil
}

// FlushConntrack forgets every connection the kernel tracks in ns (its
// NAT mappings and firewall states), as `conntrack -F` does.
func (ns *NS) FlushConntrack() error {
	if err := ns.nl.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		return fmt.Errorf("flush conntrack in %s: %w", ns.name, err)
	}
	return nil
}

// chaosTables numbers the nftables tables of the faults, so that several
// can be in force at once.
var chaosTables atomic.Int64

// DropTCP drops, in ns, the TCP packets it receives and sends that match
// (an nftables expression such as "tcp dport 4443", "" for every TCP
// packet), each with probability percent/100 (100: all of them), ahead of
// every other rule. Close lifts it.
func (ns *NS) DropTCP(match string, percent int) (*Opening, error) {
	if percent < 1 || percent > 100 {
		return nil, fmt.Errorf("drop tcp: percent %d, want 1 to 100", percent)
	}
	verdict := "drop"
	if percent < 100 {
		verdict = fmt.Sprintf("numgen random mod 100 < %d drop", percent)
	}
	table := fmt.Sprintf("sluice_chaos_%d", chaosTables.Add(1))
	var chains strings.Builder
	for _, hook := range []string{"input", "output", "forward"} {
		fmt.Fprintf(&chains, "\tchain %s {\n\t\ttype filter hook %s priority -10; policy accept;\n\t\tmeta l4proto tcp %s %s\n\t}\n", hook, hook, match, verdict)
	}
	script := fmt.Sprintf("table inet %s {\n%s}\n", table, chains.String())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := ns.run(ctx, []string{"nft", "-f", "-"}, ProcOptions{Stdin: strings.NewReader(script)}); err != nil {
		return nil, fmt.Errorf("drop tcp in %s: %w", ns.name, err)
	}
	return &Opening{undo: []func() error{func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := ns.run(ctx, []string{"nft", "delete", "table", "inet", table}, ProcOptions{}); err != nil {
			return fmt.Errorf("lift drop in %s: %w", ns.name, err)
		}
		return nil
	}}}, nil
}
