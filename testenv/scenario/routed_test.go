package scenario_test

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/testenv"
	"github.com/sluicehq/sluice/testenv/scenario"
)

// Addresses of the routed pods on the analysis host.
const (
	routedPodAddr   = "10.30.0.2"
	routedOtherAddr = "10.30.0.3"
)

// TestRoutedScenario plays the transparent story for pods on routed veths
// (the shape Calico and Cilium give pods: no bridge, a /32 route to each
// pod through its host-side veth, a link-local gateway), next to the
// seed's bridge, in one analysis agent run with --routed 'cali*': the
// allowed pod's queries reach PostgreSQL through the hub; the other pod is
// refused in the kernel until a workload by interface or by cgroup admits
// it; a spoofed source address is refused; with the agent killed (-9) the
// pins stay and connections are refused, crossing no link; cleanup leaves
// no program on the veths.
func TestRoutedScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end scenario skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := startScenarioWith(t, ctx, scenario.Options{AppDir: appDir, Mode: scenario.Transparent,
		AgentArgs: map[string][]string{"analysis": {"--routed", testenv.RoutedVethPrefix + "*"}}})
	env, host := s.Env, s.Seed.AnalysisHost
	pod, err := env.RoutedPod(host, env.RoutedVethName(), "rpod", routedPodAddr)
	if err != nil {
		t.Fatal(err)
	}
	other, err := env.RoutedPod(host, env.RoutedVethName(), "rother", routedOtherAddr)
	if err != nil {
		t.Fatal(err)
	}
	waitSteered(t, s, pod)
	waitSteered(t, s, other)
	if _, err := s.Analysis.Ctl(ctx, "workload", "create", "rpod", "--address", pod.Addr, "--attribute", scenario.AppAttribute); err != nil {
		t.Fatal(err)
	}
	if out, err := s.Analysis.Ctl(ctx, "workload", "list"); err != nil || !strings.Contains(out, pod.Veth) {
		t.Errorf("the pod's workload is not bound to its routed veth %s (%v):\n%s", pod.Veth, err, out)
	}

	t.Run("AllowedPodThroughService", func(t *testing.T) {
		before := inletCounters(t, ctx, s.Analysis)
		m := marker(t)
		if got, err := s.Psql(ctx, pod.NS, scenario.ServiceIP, scenario.ServicePort, "SELECT '"+m+"'"); err != nil || got != m {
			t.Fatalf("psql from the routed pod: %q, %v", got, err)
		}
		if after := inletCounters(t, ctx, s.Analysis); after.Steered <= before.Steered {
			t.Errorf("steered counter %d -> %d: the pod's connection was not steered", before.Steered, after.Steered)
		}
		// The bridge's container, in the same agent, still gets through.
		if got, err := s.Psql(ctx, s.Seed.App.NS, scenario.ServiceIP, scenario.ServicePort, "SELECT 1"); err != nil || got != "1" {
			t.Errorf("psql from the bridge's app: %q, %v", got, err)
		}
	})
	t.Run("OtherPodRefused", func(t *testing.T) {
		before := inletCounters(t, ctx, s.Analysis)
		t.Logf("not a workload: refused in %v", refused(t, ctx, other.NS))
		after := inletCounters(t, ctx, s.Analysis)
		if after.Refused != before.Refused+1 || after.Steered != before.Steered {
			t.Errorf("counters %+v -> %+v: want one more refused, none steered", before, after)
		}
	})
	t.Run("WorkloadByInterface", func(t *testing.T) {
		admitted(t, ctx, s, other, "by-interface", "--interface", other.Veth)
	})
	t.Run("WorkloadByCgroup", func(t *testing.T) {
		if _, err := other.NS.Start("cgroup-sleep", []string{"sleep", "300"}, testenv.ProcOptions{}); err != nil {
			t.Fatal(err)
		}
		admitted(t, ctx, s, other, "by-cgroup", "--cgroup", other.Cgroup)
	})
	t.Run("SpoofedAddressRefused", func(t *testing.T) {
		if _, err := other.NS.Run(ctx, "ip", "addr", "add", pod.Addr+"/32", "dev", "eth0"); err != nil {
			t.Fatal(err)
		}
		defer other.NS.Run(context.Background(), "ip", "addr", "del", pod.Addr+"/32", "dev", "eth0")
		before := inletCounters(t, ctx, s.Analysis)
		c, err := other.NS.DialTCPFrom(ctx, netip.MustParseAddr(pod.Addr), scenario.ServiceAddr, 2*time.Second)
		if err == nil {
			c.Close()
			t.Fatal("the other pod reached the service with the allowed pod's address")
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("spoofed connection: %v; want connection refused", err)
		}
		after := inletCounters(t, ctx, s.Analysis)
		if after.Spoofed != before.Spoofed+1 || after.Refused != before.Refused+1 {
			t.Errorf("counters %+v -> %+v: want one more spoofed and refused", before, after)
		}
	})
	t.Run("AgentKilledFailsClosed", func(t *testing.T) { testRoutedAgentKilled(t, ctx, s, pod) })
	t.Run("PodCreatedWhileAgentDeadGoesNowhere", func(t *testing.T) { testPodWhileDead(t, ctx, s) })
	t.Run("CleanupLeavesNothing", func(t *testing.T) {
		if err := s.Analysis.Cleanup(ctx); err != nil {
			t.Fatal(err)
		}
		for _, dev := range []string{pod.Veth, other.Veth} {
			if in, eg, err := host.TCXPrograms(dev); err != nil || in+eg != 0 {
				t.Errorf("after cleanup, %s has %d+%d TCX programs (%v); want none", dev, in, eg, err)
			}
		}
		if out, err := host.Run(ctx, "ip", "rule", "show"); err != nil || strings.Contains(string(out), "prohibit") {
			t.Errorf("after cleanup, the backstop rules are still there (%v):\n%s", err, out)
		}
	})
}

// admitted creates a workload named name with app=analytics by selector
// (args) and checks that ct gets through, then deletes it and checks that
// ct is refused again within policyWithin.
func admitted(t *testing.T, ctx context.Context, s *scenario.Scenario, ct *testenv.Container, name string, args ...string) {
	t.Helper()
	refused(t, ctx, ct.NS)
	create := append([]string{"workload", "create", name, "--attribute", scenario.AppAttribute}, args...)
	if _, err := s.Analysis.Ctl(ctx, create...); err != nil {
		t.Fatal(err)
	}
	reached(t, ctx, ct.NS, time.Now())
	start := time.Now()
	if _, err := s.Analysis.Ctl(ctx, "workload", "delete", name); err != nil {
		t.Fatal(err)
	}
	if took, err := waitRefused(ctx, ct.NS, start, 3*policyWithin); err != nil || took > policyWithin {
		t.Errorf("refused %v after the workload was deleted (%v); want within %v", took, err, policyWithin)
	}
}

// testRoutedAgentKilled: with the analysis agent killed (-9), the routed
// pod's connections are refused in the kernel, its query crosses neither
// its own link nor the uplink, and the pins stay; restarted, the agent
// adopts them and the pod gets through again.
func testRoutedAgentKilled(t *testing.T, ctx context.Context, s *scenario.Scenario, pod *testenv.Container) {
	a := s.Analysis
	pins := linkPins(t, a)
	if !slices.ContainsFunc(pins, func(p string) bool { return strings.HasPrefix(p, "routed-") }) {
		t.Fatalf("no routed link pins under %s: %v", a.BPFDir, pins)
	}
	dir := t.TempDir()
	caps := map[string]*testenv.Capture{}
	for name, c := range map[string]struct {
		ns     *testenv.NS
		ifname string
	}{
		"uplink": {s.Seed.AnalysisHost, testenv.SeedUplink},
		"pod":    {pod.NS, "eth0"},
	} {
		cp, err := c.ns.Capture(c.ifname, filepath.Join(dir, name+".pcap"))
		if err != nil {
			t.Fatal(err)
		}
		caps[name] = cp
	}
	alive := marker(t)
	if got, err := s.Psql(ctx, pod.NS, scenario.ServiceIP, scenario.ServicePort, "SELECT '"+alive+"'"); err != nil || got != alive {
		t.Fatalf("psql before the kill: %q, %v", got, err)
	}
	before := inletCounters(t, ctx, a).NoListener
	if err := a.Proc.Kill(); err != nil {
		t.Fatal(err)
	}
	dead := marker(t)
	refused(t, ctx, pod.NS)
	if out, err := s.Psql(ctx, pod.NS, scenario.ServiceIP, scenario.ServicePort, "SELECT '"+dead+"'"); err == nil {
		t.Errorf("psql reached something with the agent dead: %s", out)
	}
	if after := linkPins(t, a); !slices.Equal(after, pins) {
		t.Errorf("link pins with the agent dead %v, before %v", after, pins)
	}
	seenAlive, seenDead := capturesSee(t, caps, alive, dead)
	if !seenAlive["pod"] {
		t.Error("the live agent's marker is not in the pod's capture: the captures do not work")
	}
	if seenAlive["uplink"] {
		t.Error("the live agent's marker crossed the uplink in plaintext")
	}
	for name, seen := range seenDead {
		if seen {
			t.Errorf("the marker query crossed the %s link with the agent dead", name)
		}
	}
	if err := a.StartAgain(ctx); err != nil {
		t.Fatal(err)
	}
	if c := inletCounters(t, ctx, a); c.NoListener <= before {
		t.Errorf("kernel counters after the restart %+v: want the refusals while dead counted no_listener (more than %d)", c, before)
	}
	got, err := selectOneWithin(ctx, s, pod.NS, 5*time.Second)
	if err != nil || got != "1" {
		t.Errorf("psql through the restarted agent: %q, %v", got, err)
	}
}

// testPodWhileDead: a pod whose routed veth appears while the agent is
// dead has no program on it; its connection to the service must still go
// nowhere (the kernel's backstop rule refuses it: EHOSTUNREACH, ICMP
// "administratively filtered" from the host), never out of the uplink.
// Restarted, the agent takes the new veth and the kernel resets the pod,
// which is no workload.
func testPodWhileDead(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	a, host := s.Analysis, s.Seed.AnalysisHost
	if err := a.Proc.Kill(); err != nil {
		t.Fatal(err)
	}
	late, err := s.Env.RoutedPod(host, s.Env.RoutedVethName(), "rlate", "10.30.0.9")
	if err != nil {
		t.Fatal(err)
	}
	cp, err := host.Capture(testenv.SeedUplink, filepath.Join(t.TempDir(), "uplink.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := late.NS.DialTCP(ctx, scenario.ServiceAddr, 2*time.Second)
	if err == nil {
		c.Close()
		t.Error("the new pod connected to the service with the agent dead")
	} else if !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Errorf("the new pod's connection with the agent dead: %v; want no route to host (the backstop)", err)
	}
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	segs, err := testenv.ReadTCPSegments(cp.Path())
	if err != nil {
		t.Fatal(err)
	}
	for _, seg := range segs {
		if seg.Dst.String() == scenario.ServiceAddr {
			t.Errorf("a segment to the service left through the uplink with the agent dead: %+v", seg)
			break
		}
	}
	if err := a.StartAgain(ctx); err != nil {
		t.Fatal(err)
	}
	waitSteered(t, s, late)
	refused(t, ctx, late.NS)
}
