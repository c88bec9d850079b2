package testenv

import (
	"strings"
	"testing"
)

// The openings a benchmark makes: a route and a firewall hole give the app
// plain routed TCP to the bank's container (NATed behind the analysis
// host), only on the opened port, and Close takes them away again.
func TestOpenings(t *testing.T) {
	t.Parallel()
	e := NewT(t)
	s, err := NewSeed(e)
	if err != nil {
		t.Fatal(err)
	}
	open := listen(t, s.Postgres.NS, SeedPostgresAddr+":5201")
	closed := listen(t, s.Postgres.NS, SeedPostgresAddr+":5202")
	dropped(t, s.App.NS, open)

	route, err := s.RouteToBank()
	must(t, err)
	hole, err := s.AllowInbound(s.BankHost, "tcp", 5201)
	must(t, err)
	if got := whoAmI(t, s.App.NS, open); got != SeedAnalysisUp {
		t.Errorf("the service saw %s, want the analysis host's uplink %s (NAT)", got, SeedAnalysisUp)
	}
	dropped(t, s.App.NS, closed)

	must(t, hole.Close())
	must(t, hole.Close()) // idempotent
	dropped(t, s.App.NS, open)
	must(t, route.Close())
	out, err := s.AnalysisHost.Run(t.Context(), "ip", "route", "show", "10.20.0.0/24")
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("route left behind: %q, %v", out, err)
	}
	rules, err := s.BankHost.Run(t.Context(), "nft", "list", "table", "inet", "sluice_fw")
	if err != nil || strings.Contains(string(rules), "testenv opening") {
		t.Errorf("rules left behind:\n%s%v", rules, err)
	}

	if _, err := s.AllowInbound(s.Internet, "tcp", 1); err == nil {
		t.Error("AllowInbound on the internet namespace succeeded")
	}
	if _, err := s.AllowInbound(s.BankHost, "sctp", 1); err == nil {
		t.Error("AllowInbound with protocol sctp succeeded")
	}
}
