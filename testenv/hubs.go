package testenv

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// More hubs on the internet side, for a cluster of hubs: each its own
// namespace with one address on the internet's bridge, which the company
// hosts reach as they reach the seed's hub, and a partition that cuts one
// off from the others.
//
//	internet (wan0 198.18.0.1/24)
//	  ├── hub host a  up0 198.18.0.11
//	  ├── hub host b  up0 198.18.0.12
//	  └── hub host c  up0 198.18.0.13

// SeedHubHostAddr is the address of extra hub host i (0, 1, 2...).
func SeedHubHostAddr(i int) string { return fmt.Sprintf("198.18.0.%d", 11+i) }

// AddHubHost makes a host on the internet named hub-<name>, with address
// addr (no prefix length) on its uplink up0, bridged into wan0. No
// firewall: a hub is reachable, as the seed's is.
func (s *Seed) AddHubHost(name, addr string) (*NS, error) {
	e := s.Env
	host, err := e.Namespace("hub-" + name)
	if err != nil {
		return nil, err
	}
	wanSide := e.LinkName()
	if err := e.Veth(host, SeedUplink, addr+seedPrefix, s.Internet, wanSide, ""); err != nil {
		return nil, err
	}
	if err := e.AttachToBridge(s.Internet, wanSide, SeedWAN); err != nil {
		return nil, err
	}
	return host, nil
}

// Isolate drops, in ns, every packet to and from addrs, ahead of every
// other rule: ns is partitioned from them (and they from it), while the
// rest of the internet still reaches it. Close heals it.
func (ns *NS) Isolate(addrs ...string) (*Opening, error) {
	if len(addrs) == 0 {
		return nil, fmt.Errorf("isolate %s: no address", ns.name)
	}
	set := strings.Join(addrs, ", ")
	table := fmt.Sprintf("sluice_partition_%d", chaosTables.Add(1))
	script := fmt.Sprintf(`table inet %[1]s {
	chain input {
		type filter hook input priority -10; policy accept;
		ip saddr { %[2]s } drop
	}
	chain output {
		type filter hook output priority -10; policy accept;
		ip daddr { %[2]s } drop
	}
}
`, table, set)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := ns.run(ctx, []string{"nft", "-f", "-"}, ProcOptions{Stdin: strings.NewReader(script)}); err != nil {
		return nil, fmt.Errorf("isolate %s: %w", ns.name, err)
	}
	return &Opening{undo: []func() error{func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := ns.run(ctx, []string{"nft", "delete", "table", "inet", table}, ProcOptions{}); err != nil {
			return fmt.Errorf("heal %s: %w", ns.name, err)
		}
		return nil
	}}}, nil
}
