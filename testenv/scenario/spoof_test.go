package scenario_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/testenv"
	"github.com/sluicehq/sluice/testenv/scenario"
)

// spoofer is a container on analysis_corp that claims the app's address.
type spoofer struct {
	ct   *testenv.Container
	addr netip.Addr // the app's
}

// newSpoofer plugs a container into analysis_corp with an address of its
// own and adds the app's address (10.10.0.2/32) to its eth0, as an attacker
// with CAP_NET_ADMIN in its own namespace can; the address is removed when
// the test ends (the app's workload must stay creatable).
func newSpoofer(t *testing.T, ctx context.Context, s *scenario.Scenario, name, own string) *spoofer {
	t.Helper()
	ct, err := s.Seed.AddContainer(s.Seed.AnalysisHost, name, own)
	if err != nil {
		t.Fatal(err)
	}
	waitSteered(t, s, ct)
	sp := &spoofer{ct: ct, addr: netip.MustParseAddr(s.Seed.App.Addr)}
	// The spoofer answers no ARP request, so that the host keeps sending
	// the app's replies to the app: what is tested here is identity, not
	// the bridge's neighbour table (a neighbour that answers, or announces,
	// the address misdirects replies at layer 2; see AfterGratuitousARP).
	// Nor does it ask for the gateway's MAC from the app's address (an ARP
	// request updates the asker's entry in the host): a static entry.
	if err := ct.NS.SetSysctl("net.ipv4.conf.all.arp_ignore", "8"); err != nil {
		t.Fatal(err)
	}
	gwMAC, err := s.Seed.AnalysisHost.Run(ctx, "cat", "/sys/class/net/"+testenv.SeedAnalysisNet+"/address")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ct.NS.Run(ctx, "ip", "neigh", "replace", testenv.SeedAnalysisGW, "lladdr", strings.TrimSpace(string(gwMAC)),
		"dev", "eth0", "nud", "permanent"); err != nil {
		t.Fatal(err)
	}
	if _, err := ct.NS.Run(ctx, "ip", "addr", "add", sp.addr.String()+"/32", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := ct.NS.Run(context.Background(), "ip", "addr", "del", sp.addr.String()+"/32", "dev", "eth0"); err != nil {
			t.Errorf("remove the spoofed address: %v", err)
		}
		// Forget what a gratuitous ARP taught the host.
		s.Seed.AnalysisHost.Run(context.Background(), "ip", "neigh", "flush", sp.addr.String())
	})
	return sp
}

// refusedFrom asserts that connecting to addr from the spoofed address is
// refused with a reset at once.
func (sp *spoofer) refusedFrom(t *testing.T, ctx context.Context, addr string) {
	t.Helper()
	start := time.Now()
	c, err := sp.ct.NS.DialTCPFrom(ctx, sp.addr, addr, 2*time.Second)
	took := time.Since(start)
	if err == nil {
		c.Close()
		t.Fatalf("the spoofer reached %s with the app's address %s", addr, sp.addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("spoofed connection to %s: %v; want connection refused", addr, err)
	}
	if took > refuseWithin {
		t.Errorf("spoofed connection refused in %v; want under %v", took, refuseWithin)
	}
}

// testSpoofRefused: a container that adds the app's address and connects
// from it to the inlet (the transparent service, or the explicit inlet's
// address) is reset in the kernel and counted spoofed: with the app up,
// with the app's interface down, and after it announced the address with a
// gratuitous ARP; meanwhile the app still gets through.
func testSpoofRefused(t *testing.T, ctx context.Context, s *scenario.Scenario, inlet, target string) {
	sp := newSpoofer(t, ctx, s, "spoofer", "10.10.0.9")
	app := s.Seed.App
	counters := func() kernelCounters { return portalCounters(t, ctx, s.Analysis, inlet, target) }
	appGetsThrough := func(when string) {
		t.Helper()
		host, port, _ := strings.Cut(target, ":")
		if got, err := s.Psql(ctx, app.NS, host, port, "SELECT 1"); err != nil || got != "1" {
			t.Errorf("the app %s: %q, %v", when, got, err)
		}
	}
	attempt := func(when string) {
		t.Helper()
		before := counters()
		sp.refusedFrom(t, ctx, target)
		after := counters()
		t.Logf("%s: kernel counters before %+v, after %+v", when, before, after)
		if after.Spoofed < before.Spoofed+1 || after.Refused < before.Refused+1 {
			t.Errorf("%s: spoofed %d -> %d, refused %d -> %d; want both +1", when, before.Spoofed, after.Spoofed, before.Refused, after.Refused)
		}
		if after.Steered != before.Steered {
			t.Errorf("%s: steered %d -> %d: the spoofed SYN was steered", when, before.Steered, after.Steered)
		}
	}

	t.Run("AppUp", func(t *testing.T) {
		appGetsThrough("before the spoof")
		attempt("the app up")
		appGetsThrough("during the spoof")
	})
	t.Run("AppDown", func(t *testing.T) {
		// Down: the app container's eth0 is down, so nothing of it is on
		// the bridge; its host-side veth still exists, so the binding stays.
		if _, err := app.NS.Run(ctx, "ip", "link", "set", "eth0", "down"); err != nil {
			t.Fatal(err)
		}
		attempt("the app's interface down")
		if _, err := app.NS.Run(ctx, "ip", "link", "set", "eth0", "up"); err != nil {
			t.Fatal(err)
		}
		if _, err := app.NS.Run(ctx, "ip", "route", "replace", "default", "via", testenv.SeedAnalysisGW); err != nil {
			t.Fatal(err)
		}
		appGetsThrough("with its interface up again")
	})
	t.Run("AfterGratuitousARP", func(t *testing.T) {
		// The host's neighbour entry for the app's address moves to the
		// spoofer: the announcement worked (a neighbour's entry may not
		// change within its locktime, 1s: announce until it does).
		var mac string
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			hw, err := sp.ct.NS.GratuitousARP("eth0", sp.addr)
			if err != nil {
				t.Fatal(err)
			}
			mac = hw.String()
			out, _ := s.Seed.AnalysisHost.Run(ctx, "ip", "neigh", "show", sp.addr.String())
			if strings.Contains(string(out), mac) {
				t.Logf("host neighbour entry after the gratuitous ARP: %s", strings.TrimSpace(string(out)))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the gratuitous ARP did not move the host's neighbour entry to %s:\n%s", mac, out)
			}
		}
		attempt("after the gratuitous ARP")
		// The ARP entry itself misdirects replies to the app (an L2 attack
		// on the bridge, not on identity); put it right before the app's check.
		s.Seed.AnalysisHost.Run(ctx, "ip", "neigh", "flush", sp.addr.String())
		appGetsThrough("after the host forgot the spoofed neighbour entry")
	})
}

// testExplicitLocal: the explicit inlet, on the bridge's address with
// --allow-local, serves the app workload (AppThroughPortal) and nobody
// else: another container is reset in the kernel and counted, a connection
// from the host itself (no container veth: the unknown workload) is reset
// by the agent and counted refused, and a container that spoofs the app's
// address is refused as for the transparent inlet.
func testExplicitLocal(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	other, err := s.Seed.AddContainer(s.Seed.AnalysisHost, "other", "10.10.0.3")
	if err != nil {
		t.Fatal(err)
	}
	waitSteered(t, s, other)
	before := portalCounters(t, ctx, s.Analysis, scenario.ExplicitInlet, scenario.ExplicitAddr)
	start := time.Now()
	c, err := other.NS.DialTCP(ctx, "sluice:"+scenario.InletPort, 2*time.Second)
	if err == nil {
		c.Close()
		t.Fatal("another container reached the explicit inlet")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > refuseWithin {
		t.Errorf("another container: %v after %v; want connection refused within %v", err, time.Since(start), refuseWithin)
	}
	if after := portalCounters(t, ctx, s.Analysis, scenario.ExplicitInlet, scenario.ExplicitAddr); after.Refused != before.Refused+1 || after.Spoofed != before.Spoofed {
		t.Errorf("kernel counters %+v -> %+v; want one more refused, none spoofed", before, after)
	}

	// From the host itself no steer program sees the connection: the
	// agent finds no workload for it and resets it.
	refusedBefore := inletRefused(t, ctx, s.Analysis, scenario.ExplicitInlet)
	c, err = s.Seed.AnalysisHost.DialTCP(ctx, scenario.ExplicitAddr, 2*time.Second)
	if err == nil {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("a connection from the host itself: %v; want a reset", err)
	}
	if got := inletRefused(t, ctx, s.Analysis, scenario.ExplicitInlet); got != refusedBefore+1 {
		t.Errorf("inlet refused counter %d -> %d; want +1", refusedBefore, got)
	}
	testSpoofRefused(t, ctx, s, scenario.ExplicitInlet, scenario.ExplicitAddr)
}

// inletRefused reads an inlet's refused counter from `tcp-inlet list`.
func inletRefused(t *testing.T, ctx context.Context, a *scenario.Agent, name string) int64 {
	t.Helper()
	out, err := a.Ctl(ctx, "tcp-inlet", "list", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ins []struct {
		Name     string `json:"name"`
		Counters struct {
			Refused int64 `json:"refused"`
		} `json:"counters"`
	}
	if err := json.Unmarshal([]byte(out), &ins); err != nil {
		t.Fatalf("tcp-inlet list -o json: %v\n%s", err, out)
	}
	for _, in := range ins {
		if in.Name == name {
			return in.Counters.Refused
		}
	}
	t.Fatalf("no inlet %q in:\n%s", name, out)
	return 0
}
