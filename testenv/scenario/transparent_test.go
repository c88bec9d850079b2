package scenario_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/testenv"
	"github.com/sluicehq/sluice/testenv/scenario"
)

// Time limits of the transparent data path's promises.
const (
	refuseWithin = 500 * time.Millisecond // a refused connect fails this fast
	policyWithin = time.Second            // a policy change takes effect this fast
)

// TestTransparentScenario plays the seed story with the BPF data path: the
// app dials PostgreSQL's service address unchanged, and the kernel steers
// or refuses its connections. The sub-tests share the scenario and run in
// order; the last one removes the data path.
func TestTransparentScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end scenario skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := startScenario(t, ctx, scenario.Transparent)

	t.Run("AppThroughService", func(t *testing.T) {
		before := inletCounters(t, ctx, s.Analysis)
		testAppThroughPortal(t, ctx, s)
		if after := inletCounters(t, ctx, s.Analysis); after.Steered <= before.Steered {
			t.Errorf("steered counter %d -> %d: the app's connections were not steered", before.Steered, after.Steered)
		}
		// Where the kernel can, replies reach the app without crossing TCP.
		out, err := s.Analysis.Ctl(ctx, "datapath", "status", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			Acceleration string `json:"acceleration"`
			Accelerated  uint64 `json:"accelerated_connections"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatal(err)
		}
		t.Logf("socket acceleration: %s, %d connections", st.Acceleration, st.Accelerated)
		if st.Acceleration == "on" && st.Accelerated == 0 {
			t.Error("socket acceleration is on but accelerated no connection of the app")
		}
	})
	var other *testenv.Container
	t.Run("OtherWorkloadRefused", func(t *testing.T) { other = testOtherWorkloadRefused(t, ctx, s) })
	t.Run("ObserveAllowedAndRefused", func(t *testing.T) { testObserve(t, ctx, s, other) })
	t.Run("WorkloadByCgroup", func(t *testing.T) { testWorkloadByCgroup(t, ctx, s, other) })
	t.Run("SpoofedAddressRefused", func(t *testing.T) {
		testSpoofRefused(t, ctx, s, scenario.TransparentInlet, scenario.ServiceAddr)
	})
	t.Run("PolicyChangeWithinASecond", func(t *testing.T) { testPolicyChange(t, ctx, s) })
	t.Run("PeerLosesAttributesWithinASecond", func(t *testing.T) { testPeerLosesAttributes(t, ctx, s) })
	t.Run("AgentKilledFailsClosed", func(t *testing.T) { testAgentKilled(t, ctx, s) })
	t.Run("RevokedWithinASecond", func(t *testing.T) { testRevoked(t, ctx, s) })
	t.Run("CleanupLeavesNothing", func(t *testing.T) { testCleanup(t, ctx, s) })
}

// kernelCounters are one inlet's counters in `agentctl datapath status -o json`.
type kernelCounters struct {
	Steered    uint64 `json:"steered"`
	Refused    uint64 `json:"refused"`
	NoListener uint64 `json:"no_listener"`
	Spoofed    uint64 `json:"spoofed"`
	Packets    uint64 `json:"packets"`
	Bytes      uint64 `json:"bytes"`
}

// inletCounters reads the kernel counters of the transparent inlet.
func inletCounters(t *testing.T, ctx context.Context, a *scenario.Agent) kernelCounters {
	t.Helper()
	return portalCounters(t, ctx, a, scenario.TransparentInlet, scenario.ServiceAddr)
}

// portalCounters reads the kernel counters of inlet, which serves service.
func portalCounters(t *testing.T, ctx context.Context, a *scenario.Agent, inlet, service string) kernelCounters {
	t.Helper()
	out, err := a.Ctl(ctx, "datapath", "status", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Portals []struct {
			Inlet    string         `json:"inlet"`
			Service  string         `json:"service"`
			Counters kernelCounters `json:"counters"`
		} `json:"portals"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("datapath status -o json: %v\n%s", err, out)
	}
	for _, p := range st.Portals {
		if p.Inlet == inlet {
			if p.Service != service {
				t.Errorf("datapath status: inlet %s serves %q, want %s", p.Inlet, p.Service, service)
			}
			return p.Counters
		}
	}
	t.Fatalf("datapath status has no inlet %q:\n%s", inlet, out)
	return kernelCounters{}
}

// refused asserts that connecting to the service from ns is refused with a
// reset at once, and returns how long it took.
func refused(t *testing.T, ctx context.Context, ns *testenv.NS) time.Duration {
	t.Helper()
	start := time.Now()
	c, err := ns.DialTCP(ctx, scenario.ServiceAddr, 2*time.Second)
	took := time.Since(start)
	if err == nil {
		c.Close()
		t.Errorf("from %s, %s accepted the connection", ns.Name(), scenario.ServiceAddr)
		return took
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("from %s: %v; want connection refused", ns.Name(), err)
	}
	if took > refuseWithin {
		t.Errorf("from %s, refusal took %v; want under %v", ns.Name(), took, refuseWithin)
	}
	return took
}

// waitSteered waits until the data path covers the container's veth.
func waitSteered(t *testing.T, s *scenario.Scenario, ct *testenv.Container) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		in, eg, err := s.Seed.AnalysisHost.TCXPrograms(ct.Veth)
		if err != nil {
			t.Fatal(err)
		}
		if in+eg > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no program attached to %s (the veth of %s) after 10s", ct.Veth, ct.NS.Name())
		}
	}
}

// testOtherWorkloadRefused: a second container on analysis_corp, first not
// a workload at all, then a workload whose attribute the inlet does not
// allow, is refused in the kernel. It returns the container, no workload
// any more.
func testOtherWorkloadRefused(t *testing.T, ctx context.Context, s *scenario.Scenario) *testenv.Container {
	other, err := s.Seed.AddContainer(s.Seed.AnalysisHost, "other", "10.10.0.3")
	if err != nil {
		t.Fatal(err)
	}
	waitSteered(t, s, other)
	before := inletCounters(t, ctx, s.Analysis)
	t.Logf("not a workload: refused in %v", refused(t, ctx, other.NS))
	if _, err := s.Analysis.Ctl(ctx, "workload", "create", "other", "--address", other.Addr, "--attribute", "app=other"); err != nil {
		t.Fatal(err)
	}
	defer s.Analysis.Ctl(ctx, "workload", "delete", "other")
	t.Logf("workload app=other: refused in %v", refused(t, ctx, other.NS))
	after := inletCounters(t, ctx, s.Analysis)
	t.Logf("kernel counters before %+v, after %+v", before, after)
	if after.Refused < before.Refused+2 {
		t.Errorf("refused counter %d -> %d, want +2", before.Refused, after.Refused)
	}
	if after.Steered != before.Steered {
		t.Errorf("steered counter %d -> %d: a refused connection was steered", before.Steered, after.Steered)
	}
	// The allowed app still gets through.
	if got, err := s.Psql(ctx, s.Seed.App.NS, scenario.ServiceIP, scenario.ServicePort, "SELECT 1"); err != nil || got != "1" {
		t.Errorf("the app after the refusals: %q, %v", got, err)
	}
	return other
}

// cgroupWithin is how fast a workload named by cgroup follows its
// processes (the agent resolves cgroups again every 2s).
const cgroupWithin = 3 * time.Second

// testWorkloadByCgroup: the second container, refused while no workload
// names it, gets through once a workload selects it by its cgroup (with a
// process in it) with app=analytics, and is refused again once that
// workload is deleted. Re-created while the cgroup is empty, the workload
// covers the container within cgroupWithin of a process joining it.
func testWorkloadByCgroup(t *testing.T, ctx context.Context, s *scenario.Scenario, other *testenv.Container) {
	if other == nil {
		t.Skip("no second container: OtherWorkloadRefused failed")
	}
	refused(t, ctx, other.NS)
	sleep, err := other.NS.Start("cgroup-sleep", []string{"sleep", "300"}, testenv.ProcOptions{})
	if err != nil {
		t.Fatal(err)
	}
	create := []string{"workload", "create", "by-cgroup", "--cgroup", other.Cgroup, "--attribute", "app=analytics"}
	if _, err := s.Analysis.Ctl(ctx, create...); err != nil {
		t.Fatal(err)
	}
	if out, err := s.Analysis.Ctl(ctx, "workload", "list"); err != nil || !strings.Contains(out, "cgroup "+other.Cgroup) {
		t.Errorf("workload list does not show the cgroup selector (%v):\n%s", err, out)
	}
	reached(t, ctx, other.NS, time.Now())
	start := time.Now()
	if _, err := s.Analysis.Ctl(ctx, "workload", "delete", "by-cgroup"); err != nil {
		t.Fatal(err)
	}
	if took, err := waitRefused(ctx, other.NS, start, 3*policyWithin); err != nil || took > policyWithin {
		t.Errorf("refused %v after the workload was deleted (%v); want within %v", took, err, policyWithin)
	}

	// Processes come and go without link events: the agent looks again.
	if err := sleep.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Analysis.Ctl(ctx, create...); err != nil {
		t.Fatal(err)
	}
	defer s.Analysis.Ctl(ctx, "workload", "delete", "by-cgroup")
	refused(t, ctx, other.NS) // no process in the cgroup: an unknown container
	if _, err := other.NS.Start("cgroup-sleep", []string{"sleep", "300"}, testenv.ProcOptions{}); err != nil {
		t.Fatal(err)
	}
	reached(t, ctx, other.NS, time.Now())
}

// reached waits up to cgroupWithin after since for ns to get through the
// portal to PostgreSQL.
func reached(t *testing.T, ctx context.Context, ns *testenv.NS, since time.Time) {
	t.Helper()
	for {
		c, err := openSession(ctx, ns)
		if err == nil {
			c.Close()
			t.Logf("%s reached the service %v after the change", ns.Name(), time.Since(since))
			return
		}
		if time.Since(since) > cgroupWithin {
			t.Fatalf("%s still cannot reach the service %v after the change: %v", ns.Name(), cgroupWithin, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// openSession dials the service from the app container and does one round
// trip with PostgreSQL.
func openSession(ctx context.Context, ns *testenv.NS) (net.Conn, error) {
	return openSessionAt(ctx, ns, scenario.ServiceAddr)
}

// waitRefused dials the service from ns until it is refused and returns how
// long that took after since.
func waitRefused(ctx context.Context, ns *testenv.NS, since time.Time, limit time.Duration) (time.Duration, error) {
	for {
		c, err := ns.DialTCP(ctx, scenario.ServiceAddr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		} else if errors.Is(err, syscall.ECONNREFUSED) {
			return time.Since(since), nil
		}
		if time.Since(since) > limit {
			return time.Since(since), errors.Join(errors.New("still not refused"), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testPolicyChange: deleting the app's workload refuses new connections and
// closes the established one within a second; re-creating it lets the app
// in again.
func testPolicyChange(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	cutOff(t, ctx, s, "the workload was deleted", s.DisallowApp)
	if err := s.AllowApp(ctx); err != nil {
		t.Fatal(err)
	}
	expectBack(t, ctx, s)
}

// cutOff opens a session through the portal, makes change, and checks that
// within policyWithin new connections are refused in the kernel and the
// open session is closed.
func cutOff(t *testing.T, ctx context.Context, s *scenario.Scenario, what string, change func(context.Context) error) {
	t.Helper()
	app := s.Seed.App.NS
	c, err := openSession(ctx, app)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if err := change(ctx); err != nil {
		t.Fatal(err)
	}
	took, err := waitRefused(ctx, app, start, 3*policyWithin)
	if err != nil || took > policyWithin {
		t.Errorf("new connections refused %v after %s (%v); want within %v", took, what, err, policyWithin)
	}
	c.SetReadDeadline(start.Add(policyWithin))
	var b [1]byte
	_, err = c.Read(b[:])
	var ne net.Error
	switch {
	case err == nil:
		t.Error("the established connection still carries data")
	case errors.As(err, &ne) && ne.Timeout():
		t.Errorf("the established connection was not closed within %v after %s", policyWithin, what)
	default:
		t.Logf("established connection closed %v after %s: %v", time.Since(start), what, err)
	}
}

// expectBack waits up to policyWithin for the app to get through again.
func expectBack(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	t.Helper()
	app := s.Seed.App.NS
	var again net.Conn
	var err error
	for deadline := time.Now().Add(policyWithin); ; time.Sleep(20 * time.Millisecond) {
		if again, err = openSession(ctx, app); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("the app is still refused %v after the change was undone: %v", policyWithin, err)
	}
	again.Close()
	if got, err := s.Psql(ctx, app, scenario.ServiceIP, scenario.ServicePort, "SELECT 1"); err != nil || got != "1" {
		t.Errorf("psql after re-allowing: %q, %v", got, err)
	}
}

// nodeOf reads an agent's node ID from its status.
func nodeOf(t *testing.T, ctx context.Context, a *scenario.Agent) string {
	t.Helper()
	out, err := a.Ctl(ctx, "status", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Node string `json:"node"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Node == "" {
		t.Fatalf("status -o json: %v\n%s", err, out)
	}
	return st.Node
}

// member runs `agentctl member ARGS --project DIR` against the hub.
func member(s *scenario.Scenario, args ...string) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := s.Ctl(ctx, append(append([]string{"member"}, args...), "--project", s.ProjectDir)...)
		return err
	}
}

// testPeerLosesAttributes: when the hub gives the bank's agent attributes
// that the inlet's --allow postgres-outlet no longer accepts, the analysis
// agent denies the inlet in the kernel and closes its channel within a
// second; giving them back opens it again.
func testPeerLosesAttributes(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	bank := nodeOf(t, ctx, s.Bank)
	cutOff(t, ctx, s, "the bank lost postgres-outlet", member(s, "set-attributes", bank, "--attribute", "postgres-outlet=false"))
	if err := member(s, "set-attributes", bank, "--attribute", "postgres-outlet=true")(ctx); err != nil {
		t.Fatal(err)
	}
	expectBack(t, ctx, s)
}

// testRevoked: Bank Corp revokes Analysis Corp's agent; within a second its
// open session is closed (by both ends) and the kernel refuses new ones.
func testRevoked(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	cutOff(t, ctx, s, "the analysis agent was revoked", member(s, "revoke", nodeOf(t, ctx, s.Analysis)))
	out, err := s.Ctl(ctx, "member", "list", "--project", s.ProjectDir)
	if err != nil || !strings.Contains(out, "revoked") {
		t.Errorf("member list after revoking: %v\n%s", err, out)
	}
}

func linkPins(t *testing.T, a *scenario.Agent) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(a.BPFDir, "links"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// capturesSee stops the captures and tells, for each, whether a and b are
// in its TCP payloads.
func capturesSee(t *testing.T, caps map[string]*testenv.Capture, a, b string) (seenA, seenB map[string]bool) {
	t.Helper()
	seenA, seenB = map[string]bool{}, map[string]bool{}
	for name, c := range caps {
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
		segs, err := testenv.ReadTCPPayloads(c.Path())
		if err != nil {
			t.Fatal(err)
		}
		var all []byte
		for _, seg := range segs {
			all = append(all, seg.Payload...)
		}
		seenA[name] = strings.Contains(string(all), a)
		seenB[name] = strings.Contains(string(all), b)
	}
	return seenA, seenB
}

// testAgentKilled: with the analysis agent killed (-9), connections to the
// service are refused in the kernel and the marker query crosses no link;
// restarted on the same state and bpf dirs, the agent adopts its pins and
// the app gets through again.
func testAgentKilled(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	a, app := s.Analysis, s.Seed.App.NS
	pins := linkPins(t, a)
	if len(pins) == 0 {
		t.Fatalf("no link pins under %s", a.BPFDir)
	}
	dir := t.TempDir()
	caps := map[string]*testenv.Capture{}
	for name, c := range map[string]struct {
		ns     *testenv.NS
		ifname string
	}{
		"uplink": {s.Seed.AnalysisHost, testenv.SeedUplink},
		"bridge": {s.Seed.AnalysisHost, testenv.SeedAnalysisNet},
		"app":    {app, "eth0"},
	} {
		cp, err := c.ns.Capture(c.ifname, filepath.Join(dir, name+".pcap"))
		if err != nil {
			t.Fatal(err)
		}
		caps[name] = cp
	}
	// While the agent lives, a first marker proves the captures work: it is
	// seen on the app's link, never on the uplink.
	alive := marker(t)
	if got, err := s.Psql(ctx, app, scenario.ServiceIP, scenario.ServicePort, "SELECT '"+alive+"'"); err != nil || got != alive {
		t.Fatalf("psql before the kill: %q, %v", got, err)
	}
	if err := a.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	dead := marker(t)
	refused(t, ctx, app)
	if out, err := s.Psql(ctx, app, scenario.ServiceIP, scenario.ServicePort, "SELECT '"+dead+"'"); err == nil {
		t.Errorf("psql reached something with the agent dead: %s", out)
	}
	seenAlive, seenDead := capturesSee(t, caps, alive, dead)
	if !seenAlive["app"] {
		t.Error("the live agent's marker is not in the app-side capture: the captures do not work")
	}
	if seenAlive["uplink"] {
		t.Error("the live agent's marker crossed the uplink in plaintext")
	}
	for name, seen := range seenDead {
		if seen {
			t.Errorf("the marker query crossed the %s link with the agent dead", name)
		}
	}

	if err := a.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// The kernel counted the refusals while the agent was dead, and the
	// restarted agent adopted those counters with the pins.
	if c := inletCounters(t, ctx, a); c.NoListener == 0 || c.Steered == 0 {
		t.Errorf("kernel counters after the restart %+v: want the steered connections and the refusals while dead", c)
	}
	if after := linkPins(t, a); !slices.Equal(after, pins) {
		t.Errorf("link pins after restart %v, before %v", after, pins)
	}
	got, err := selectOneWithin(ctx, s, app, 5*time.Second)
	if err != nil || got != "1" {
		t.Errorf("psql through the restarted agent: %q, %v", got, err)
	}
}

// testCleanup: `agent cleanup` after the agent stopped removes the pin
// directory and every TCX program from the veths and the bridge.
func testCleanup(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	a, host := s.Analysis, s.Seed.AnalysisHost
	devices := []string{s.Seed.App.Veth, testenv.SeedAnalysisNet}
	for _, dev := range devices {
		if in, eg, err := host.TCXPrograms(dev); err != nil || in+eg == 0 {
			t.Errorf("before cleanup, %s has %d+%d TCX programs (%v); want some", dev, in, eg, err)
		}
	}
	if err := a.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a.BPFDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory %s after cleanup: %v; want it gone", a.BPFDir, err)
	}
	links, err := host.Run(ctx, "ip", "-o", "link", "show", "master", testenv.SeedAnalysisNet)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(links)), "\n") {
		// "7: vXXXX@if2: <...>": the bridge's ports.
		f := strings.Fields(line)
		if len(f) > 1 {
			dev, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			devices = append(devices, dev)
		}
	}
	for _, dev := range slices.Compact(slices.Sorted(slices.Values(devices))) {
		if in, eg, err := host.TCXPrograms(dev); err != nil || in+eg != 0 {
			t.Errorf("after cleanup, %s has %d+%d TCX programs (%v); want none", dev, in, eg, err)
		}
	}
}

// selectOneWithin runs SELECT 1 through the service address from ns until
// it succeeds or d has passed (an agent just restarted takes its veths and
// listener back), and returns the last answer.
func selectOneWithin(ctx context.Context, s *scenario.Scenario, ns *testenv.NS, d time.Duration) (string, error) {
	for deadline := time.Now().Add(d); ; time.Sleep(100 * time.Millisecond) {
		got, err := s.Psql(ctx, ns, scenario.ServiceIP, scenario.ServicePort, "SELECT 1")
		if err == nil || time.Now().After(deadline) {
			return got, err
		}
	}
}
