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
}

// NewSeed builds the seed topology in e. It starts no process.
func NewSeed(e *Env) (*Seed, error) {
	s := &Seed{Env: e, HubAddr: SeedHubAddr}
	var err error
	if s.Internet, err = e.Namespace("internet"); err != nil {
		return nil, err
	}
	if err := e.Bridge(s.Internet, SeedWAN, SeedHubAddr+seedPrefix); err != nil {
		return nil, err
	}
	if s.AnalysisHost, err = s.companyHost("analysis", SeedAnalysisUp, SeedAnalysisNet, SeedAnalysisGW+seedPrefix); err != nil {
		return nil, err
	}
	if s.App, err = e.Container(s.AnalysisHost, SeedAnalysisNet, "app", SeedAppAddr+seedPrefix, SeedAnalysisGW); err != nil {
		return nil, err
	}
	if err := s.App.NS.SetHosts(map[string]string{"sluice": SeedAnalysisGW}); err != nil {
		return nil, err
	}
	if s.BankHost, err = s.companyHost("bank", SeedBankUp, SeedBankNet, SeedBankGW+seedPrefix); err != nil {
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
	e := s.Env
	host, err := e.Namespace(role)
	if err != nil {
		return nil, err
	}
	wanSide := e.LinkName()
	if err := e.Veth(host, SeedUplink, uplink+seedPrefix, s.Internet, wanSide, ""); err != nil {
		return nil, err
	}
	if err := e.AttachToBridge(s.Internet, wanSide, SeedWAN); err != nil {
		return nil, err
	}
	// The internet has no route back to 10.x: only NAT makes replies work.
	if err := host.AddRoute("default", SeedHubAddr); err != nil {
		return nil, err
	}
	if err := e.Bridge(host, bridge, bridgeCIDR); err != nil {
		return nil, err
	}
	if err := e.Firewall(host, SeedUplink); err != nil {
		return nil, fmt.Errorf("build %s host: %w", role, err)
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
