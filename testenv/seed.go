package testenv

import "fmt"

// Addresses and names of the seed topology. Every network is a /24.
const (
	SeedHubAddr      = "198.18.0.1"    // the internet namespace on wan0, where the hub listens
	SeedWAN          = "wan0"          // the internet's bridge
	SeedUplink       = "up0"           // each company host's link to the internet
	SeedAnalysisUp   = "198.18.0.2"    // the analysis host on the internet
	SeedBankUp       = "198.18.0.3"    // the bank host on the internet
	SeedAnalysisNet  = "analysis_corp" // the analysis host's container bridge
	SeedAnalysisGW   = "10.10.0.1"     // the analysis host on analysis_corp
	SeedAppAddr      = "10.10.0.2"     // the app container
	SeedBankNet      = "bank_corp"     // the bank host's container bridge
	SeedBankGW       = "10.20.0.1"     // the bank host on bank_corp
	SeedPostgresAddr = "10.20.0.2"     // the PostgreSQL container
	seedPrefix       = "/24"
)

// Seed is the topology of the seed story: an internet with the hub, and two
// companies, each a host behind a NAT firewall with one container on a
// private bridge. Nothing on the internet can open a connection to a
// company; the companies cannot reach each other's private networks.
//
//	internet (hub, wan0 198.18.0.1/24)
//	├── analysis host (up0 198.18.0.2, NAT) ── analysis_corp 10.10.0.1/24 ── app 10.10.0.2
//	└── bank host     (up0 198.18.0.3, NAT) ── bank_corp     10.20.0.1/24 ── postgres 10.20.0.2
//
// In the app container "sluice" resolves to 10.10.0.1 (where the analysis
// agent's inlet listens); on the bank host "postgres" resolves to 10.20.0.2.
type Seed struct {
	Env          *Env
	Internet     *NS        // the hub lives here; bridge wan0, 198.18.0.1/24
	HubAddr      string     // SeedHubAddr
	AnalysisHost *NS        // up0 198.18.0.2/24, bridge analysis_corp 10.10.0.1/24
	App          *Container // in analysis_corp, 10.10.0.2/24
	BankHost     *NS        // up0 198.18.0.3/24, bridge bank_corp 10.20.0.1/24
	Postgres     *Container // in bank_corp, 10.20.0.2/24
	// AnalysisRouter and BankRouter are the NAT routers in front of the
	// company hosts (NewSeedBehindNAT); nil in the seed itself.
	AnalysisRouter *NS
	BankRouter     *NS
}

// NewSeed builds the seed topology in e. It starts no process.
func NewSeed(e *Env) (*Seed, error) { return newSeed(e, nil) }

// newSeed builds the seed, with each company host behind a NAT router if
// nat is not nil.
func newSeed(e *Env, nat *NATOptions) (*Seed, error) {
	s := &Seed{Env: e, HubAddr: SeedHubAddr}
	var err error
	if s.Internet, err = e.Namespace("internet"); err != nil {
		return nil, err
	}
	if err := e.Bridge(s.Internet, SeedWAN, SeedHubAddr+seedPrefix); err != nil {
		return nil, err
	}
	company := s.companyHost
	if nat != nil {
		company = s.behindRouter(*nat)
	}
	if s.AnalysisHost, err = company("analysis", SeedAnalysisUp, SeedAnalysisNet, SeedAnalysisGW+seedPrefix); err != nil {
		return nil, err
	}
	if s.App, err = e.Container(s.AnalysisHost, SeedAnalysisNet, "app", SeedAppAddr+seedPrefix, SeedAnalysisGW); err != nil {
		return nil, err
	}
	if err := s.App.NS.SetHosts(map[string]string{"sluice": SeedAnalysisGW}); err != nil {
		return nil, err
	}
	if s.BankHost, err = company("bank", SeedBankUp, SeedBankNet, SeedBankGW+seedPrefix); err != nil {
		return nil, err
	}
	if err := s.BankHost.SetHosts(map[string]string{"postgres": SeedPostgresAddr}); err != nil {
		return nil, err
	}
	if s.Postgres, err = e.Container(s.BankHost, SeedBankNet, "postgres", SeedPostgresAddr+seedPrefix, SeedBankGW); err != nil {
		return nil, err
	}
	return s, nil
}

// companyHost makes a host on the internet (uplink up0 with address uplink,
// default route via the internet) with a container bridge, behind a NAT
// firewall.
func (s *Seed) companyHost(role, uplink, bridge, bridgeCIDR string) (*NS, error) {
	return s.natHost(natHost{role: role, up: s.Internet, upBridge: SeedWAN, uplink: uplink, gateway: SeedHubAddr,
		bridge: bridge, bridgeCIDR: bridgeCIDR})
}

// natHost describes a host behind a NAT firewall: its uplink up0 is a port
// of upBridge in up, its default route goes via gateway, its own bridge has
// the address bridgeCIDR.
type natHost struct {
	role, uplink, gateway string
	up                    *NS
	upBridge              string
	bridge, bridgeCIDR    string
	masquerade            string // the masquerade statement's flags ("" keeps ports when it can)
	dropInvalid           bool   // drop forwarded packets conntrack does not track
}

// natHost makes the host h describes.
func (s *Seed) natHost(h natHost) (*NS, error) {
	e := s.Env
	host, err := e.Namespace(h.role)
	if err != nil {
		return nil, err
	}
	upSide := e.LinkName()
	if err := e.Veth(host, SeedUplink, h.uplink+seedPrefix, h.up, upSide, ""); err != nil {
		return nil, err
	}
	if err := e.AttachToBridge(h.up, upSide, h.upBridge); err != nil {
		return nil, err
	}
	// Upstream has no route back to the bridge's network: only NAT makes
	// replies work.
	if err := host.AddRoute("default", h.gateway); err != nil {
		return nil, err
	}
	if err := e.Bridge(host, h.bridge, h.bridgeCIDR); err != nil {
		return nil, err
	}
	if err := e.firewall(host, SeedUplink, h.masquerade, h.dropInvalid); err != nil {
		return nil, fmt.Errorf("build %s host: %w", h.role, err)
	}
	return host, nil
}

// AddContainer plugs another container named name, with the address addr
// (no prefix length), into the container bridge of host (AnalysisHost or
// BankHost), with the same default route and names as the seed's container
// there. name follows the rules of Env.Namespace.
func (s *Seed) AddContainer(host *NS, name, addr string) (*Container, error) {
	var bridge, gw string
	hosts := map[string]string{}
	switch host {
	case s.AnalysisHost:
		bridge, gw = SeedAnalysisNet, SeedAnalysisGW
		hosts["sluice"] = SeedAnalysisGW
	case s.BankHost:
		bridge, gw = SeedBankNet, SeedBankGW
	default:
		return nil, fmt.Errorf("add container %s: not a company host of the seed", name)
	}
	c, err := s.Env.Container(host, bridge, name, addr+seedPrefix, gw)
	if err != nil {
		return nil, err
	}
	if len(hosts) > 0 {
		if err := c.NS.SetHosts(hosts); err != nil {
			return nil, err
		}
	}
	return c, nil
}
