package testenv

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestNamespaceBasics(t *testing.T) {
	t.Parallel()
	e := NewT(t)
	host := mustNS(t, e, "host")
	must(t, e.Bridge(host, "br0", "10.30.0.1/24"))
	ct, err := e.Container(host, "br0", "ct", "10.30.0.2/24", "10.30.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if ct.Addr != "10.30.0.2" || len(ct.Veth) > maxIfName || !strings.HasPrefix(ct.NS.Name(), e.NamespacePrefix()) {
		t.Errorf("container = %+v", ct)
	}
	addr := listen(t, host, "10.30.0.1:0")
	if got := whoAmI(t, ct.NS, addr); got != "10.30.0.2" {
		t.Errorf("gateway saw the container as %s, want 10.30.0.2", got)
	}

	must(t, ct.NS.SetHosts(map[string]string{"gw": "10.30.0.1"}))
	_, port, _ := strings.Cut(addr, ":")
	if got := whoAmI(t, ct.NS, "gw:"+port); got != "10.30.0.2" {
		t.Errorf("via hosts name: gateway saw %s", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := ct.NS.Run(ctx, "cat", "/etc/hosts")
	if err != nil || !strings.Contains(string(out), "10.30.0.1\tgw") {
		t.Errorf("/etc/hosts in the container = %q, %v", out, err)
	}

	must(t, host.SetSysctl("net.ipv4.ip_forward", "1"))
	var fwd, own []byte
	must(t, host.Do(func() (err error) {
		fwd, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		return err
	}))
	must(t, ct.NS.Do(func() (err error) {
		own, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		return err
	}))
	if strings.TrimSpace(string(fwd)) != "1" || strings.TrimSpace(string(own)) != "0" {
		t.Errorf("ip_forward: host %q, container %q; want 1 and 0", fwd, own)
	}
	if _, err := e.Namespace("host"); err == nil {
		t.Error("a second namespace with the same role was created")
	}
}

// TestVethBetweenHosts links two namespaces directly and routes through a
// third.
func TestVethBetweenHosts(t *testing.T) {
	t.Parallel()
	e := NewT(t)
	a, r, b := mustNS(t, e, "a"), mustNS(t, e, "r"), mustNS(t, e, "b")
	must(t, e.Veth(a, "eth0", "10.50.1.2/24", r, "ra", "10.50.1.1/24"))
	must(t, e.Veth(r, "rb", "10.50.2.1/24", b, "eth0", "10.50.2.2/24"))
	must(t, r.SetSysctl("net.ipv4.ip_forward", "1"))
	must(t, a.AddRoute("default", "10.50.1.1"))
	must(t, b.AddRoute("10.50.1.0/24", "10.50.2.1"))
	addr := listen(t, b, "10.50.2.2:0")
	if got := whoAmI(t, a, addr); got != "10.50.1.2" {
		t.Errorf("b saw a as %s", got)
	}
}

func TestFirewall(t *testing.T) {
	t.Parallel()
	e := NewT(t)
	s, err := NewSeed(e)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing from the internet gets in, to the host or through it, even
	// when the internet routes the private range at the uplink.
	listen(t, s.AnalysisHost, "0.0.0.0:7000")
	listen(t, s.App.NS, "0.0.0.0:7000")
	must(t, s.Internet.AddRoute("10.10.0.0/24", SeedAnalysisUp))
	dropped(t, s.Internet, SeedAnalysisUp+":7000")
	dropped(t, s.Internet, SeedAnalysisGW+":7000")
	dropped(t, s.Internet, SeedAppAddr+":7000")
	// The bank, on the same internet segment, cannot get in either.
	dropped(t, s.BankHost, SeedAnalysisUp+":7000")

	// Out works, and leaves behind the host's uplink address.
	addr := listen(t, s.Internet, SeedHubAddr+":0")
	if got := whoAmI(t, s.AnalysisHost, addr); got != SeedAnalysisUp {
		t.Errorf("internet saw the analysis host as %s", got)
	}
	if got := whoAmI(t, s.App.NS, addr); got != SeedAnalysisUp {
		t.Errorf("internet saw the app as %s, want it masqueraded to %s", got, SeedAnalysisUp)
	}
	if got := whoAmI(t, s.Postgres.NS, addr); got != SeedBankUp {
		t.Errorf("internet saw postgres's container as %s, want %s", got, SeedBankUp)
	}
	// The app reaches its own host by the name "sluice".
	_, port, _ := strings.Cut(listen(t, s.AnalysisHost, SeedAnalysisGW+":0"), ":")
	if got := whoAmI(t, s.App.NS, "sluice:"+port); got != SeedAppAddr {
		t.Errorf("analysis host saw the app as %s", got)
	}
}
