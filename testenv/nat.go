package testenv

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Addresses of the NAT routers' private links (NewSeedBehindNAT). The
// routers take the company hosts' public addresses of the seed
// (SeedAnalysisUp, SeedBankUp).
const (
	NATLAN             = "lan0"         // each router's bridge to its company host
	NATAnalysisRouter  = "192.168.10.1" // the analysis router on lan0
	NATAnalysisPrivate = "192.168.10.2" // the analysis host's up0, behind it
	NATBankRouter      = "192.168.20.1" // the bank router on lan0
	NATBankPrivate     = "192.168.20.2" // the bank host's up0, behind it
)

// NATOptions configure the routers of NewSeedBehindNAT. The zero value is a
// router whose masquerade keeps source ports (Linux's default: it keeps
// the port unless another mapping holds it) and whose conntrack picks up
// TCP connections it did not see start (the kernel's default).
type NATOptions struct {
	// Random maps every connection to a random source port
	// (`masquerade random,fully-random`), as a NAT that defeats hole
	// punching does.
	Random bool
	// StrictConntrack sets net.netfilter.nf_conntrack_tcp_loose=0 in the
	// routers (a per-namespace setting): a packet of a connection whose
	// entry was forgotten (FlushConntrack) no longer creates an
	// established entry, it is dropped as invalid, so a flushed flow
	// breaks instead of being picked up again, as on a NAT that lost its
	// state (a reboot, a failover). With the default (1), the next packet
	// from inside creates a new entry (new mapping, same port when the NAT
	// keeps ports) and the flow resumes; a packet from outside is new on
	// the uplink and dropped until then.
	StrictConntrack bool
}

// NewSeedBehindNAT builds the seed topology with a NAT router in front of
// each company host: the router is on the internet with the host's public
// address, masquerades what leaves through it and drops every new
// connection arriving on its uplink (the seed's firewall, with ct state
// invalid dropped too); the company host is behind it on a private link,
// with its own firewall and container bridge as in the seed. The
// containers' addresses and names are the seed's. It starts no process.
//
//	internet (hub, wan0 198.18.0.1/24)
//	├── analysis router (up0 198.18.0.2, NAT) ── lan0 192.168.10.1/24
//	│     └── analysis host (up0 192.168.10.2, NAT) ── analysis_corp 10.10.0.1/24 ── app 10.10.0.2
//	└── bank router     (up0 198.18.0.3, NAT) ── lan0 192.168.20.1/24
//	      └── bank host     (up0 192.168.20.2, NAT) ── bank_corp     10.20.0.1/24 ── postgres 10.20.0.2
func NewSeedBehindNAT(e *Env, opts NATOptions) (*Seed, error) {
	return newSeed(e, &opts)
}

// behindRouter returns a companyHost that puts the host behind a router of
// its own, which takes the host's public address.
func (s *Seed) behindRouter(opts NATOptions) func(role, uplink, bridge, bridgeCIDR string) (*NS, error) {
	masquerade := ""
	if opts.Random {
		masquerade = "random,fully-random"
	}
	return func(role, uplink, bridge, bridgeCIDR string) (*NS, error) {
		routerAddr, private := NATAnalysisRouter, NATAnalysisPrivate
		if uplink == SeedBankUp {
			routerAddr, private = NATBankRouter, NATBankPrivate
		}
		router, err := s.natHost(natHost{role: role + "-router", up: s.Internet, upBridge: SeedWAN, uplink: uplink,
			gateway: SeedHubAddr, bridge: NATLAN, bridgeCIDR: routerAddr + seedPrefix, masquerade: masquerade, dropInvalid: true})
		if err != nil {
			return nil, err
		}
		if opts.StrictConntrack {
			if err := router.SetSysctl("net.netfilter.nf_conntrack_tcp_loose", "0"); err != nil {
				return nil, fmt.Errorf("build %s router: %w", role, err)
			}
		}
		if uplink == SeedBankUp {
			s.BankRouter = router
		} else {
			s.AnalysisRouter = router
		}
		return s.natHost(natHost{role: role, up: router, upBridge: NATLAN, uplink: private, gateway: routerAddr,
			bridge: bridge, bridgeCIDR: bridgeCIDR})
	}
}

// FlushConntrackWith forgets the connections the kernel tracks in ns to or
// from peer (either end of the original direction), as `conntrack -D -s
// peer` and `-D -d peer` do, and returns how many it forgot. Unlike
// FlushConntrack, the other flows (an agent's control link to the hub)
// keep their state: a NAT router that lost the mappings of one peer's
// flows (expired, or moved to another path).
func (ns *NS) FlushConntrackWith(peer netip.Addr) (uint, error) {
	var filters []netlink.CustomConntrackFilter
	for _, tp := range []netlink.ConntrackFilterType{netlink.ConntrackOrigSrcIP, netlink.ConntrackOrigDstIP} {
		f := &netlink.ConntrackFilter{}
		if err := f.AddIP(tp, peer.AsSlice()); err != nil {
			return 0, fmt.Errorf("flush conntrack with %s in %s: %w", peer, ns.name, err)
		}
		filters = append(filters, f)
	}
	family := netlink.InetFamily(unix.AF_INET)
	if peer.Is6() && !peer.Is4In6() {
		family = unix.AF_INET6
	}
	n, err := ns.nl.ConntrackDeleteFilters(netlink.ConntrackTable, family, filters...)
	if err != nil {
		return n, fmt.Errorf("flush conntrack with %s in %s: %w", peer, ns.name, err)
	}
	return n, nil
}
