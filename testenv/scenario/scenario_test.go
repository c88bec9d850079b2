package scenario_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/portal"
	"github.com/sluicehq/sluice/testenv"
	"github.com/sluicehq/sluice/testenv/scenario"
)

// TestSeedScenario plays the seed story once and checks, on the same
// topology, every promise the story makes.
func TestSeedScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end scenario skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := startScenario(t, ctx, scenario.Explicit)

	t.Run("AppThroughPortal", func(t *testing.T) { testAppThroughPortal(t, ctx, s) })
	t.Run("Capture", func(t *testing.T) { testCapture(t, ctx, s) })
	t.Run("ExplicitInletLocalPolicy", func(t *testing.T) { testExplicitLocal(t, ctx, s) })
	t.Run("NothingAnswersFromTheInternet", func(t *testing.T) { testNothingAnswersFromInternet(t, ctx, s) })
	t.Run("BankCannotReachAnalysis", func(t *testing.T) { testBankCannotReachAnalysis(t, ctx, s) })
	t.Run("NodeWithoutAttributeRefused", func(t *testing.T) { testNodeWithoutAttributeRefused(t, ctx, s) })
	t.Run("TicketsRefused", func(t *testing.T) { testTicketsRefused(t, ctx, s) })
	t.Run("RestartNeedsNoTicket", func(t *testing.T) { testRestart(t, ctx, s) })
	t.Run("EphemeralPins", func(t *testing.T) { testEphemeralPins(t, ctx, s) })
}

// startScenario builds the seed topology in a new env and starts the story
// in mode; the scenario (agents, data path pins) and then the env are cleaned
// up when the test ends.
func startScenario(t *testing.T, ctx context.Context, mode scenario.Mode) *scenario.Scenario {
	t.Helper()
	return startScenarioWith(t, ctx, scenario.Options{AppDir: appDir, Mode: mode})
}

// startScenarioWith is startScenario with opts (Bin and Progress filled
// in; the app's dependencies checked where AppDir is set).
func startScenarioWith(t *testing.T, ctx context.Context, opts scenario.Options) *scenario.Scenario {
	t.Helper()
	env := testenv.NewT(t)
	if opts.AppDir != "" {
		if _, err := os.Stat(filepath.Join(opts.AppDir, "node_modules", "pg")); err != nil {
			t.Fatalf("the Node.js app's dependencies are missing: run `make app-deps` (%v)", err)
		}
	}
	opts.Bin = bin
	opts.Progress = func(m string) { t.Log(m) }
	s, err := scenario.New(env, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Registered after NewT's cleanup, so it runs before the env closes.
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close scenario: %v", err)
		}
	})
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func marker(t *testing.T) string {
	var b [8]byte
	rand.Read(b[:])
	return "SLUICE-MARKER-" + hex.EncodeToString(b[:])
}

// testAppThroughPortal runs the Node.js app and psql through the inlet (the
// scenario's AppTarget), with
// captures on the app's link and on the internet link: the marker written by
// the app must be seen in plaintext on the app's side and never on the
// internet.
func testAppThroughPortal(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	dir := t.TempDir()
	appCap, err := s.Seed.App.NS.Capture("eth0", filepath.Join(dir, "app.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	netCap, err := s.Seed.Internet.Capture("wan0", filepath.Join(dir, "internet.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	mark := marker(t)
	out, err := s.RunApp(ctx, mark)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"created table users", "inserted 3 rows", `"name":"Alice"`, mark, "The example run was successful"} {
		if !strings.Contains(out, want) {
			t.Errorf("app output lacks %q:\n%s", want, out)
		}
	}
	host, port := s.AppTarget()
	got, err := s.Psql(ctx, s.Seed.App.NS, host, port, "SELECT count(*) FROM users WHERE note LIKE '%"+mark+"'")
	if err != nil || got != "3" {
		t.Errorf("psql through the inlet = %q, %v; want 3", got, err)
	}
	if err := appCap.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := netCap.Stop(); err != nil {
		t.Fatal(err)
	}
	appSegs, err := testenv.ReadTCPPayloads(appCap.Path())
	if err != nil {
		t.Fatal(err)
	}
	netSegs, err := testenv.ReadTCPPayloads(netCap.Path())
	if err != nil {
		t.Fatal(err)
	}
	seen := func(segs []testenv.TCPSegment, s string) (bool, int) {
		var all []byte
		for _, seg := range segs {
			all = append(all, seg.Payload...)
		}
		return strings.Contains(string(all), s), len(all)
	}
	if ok, n := seen(appSegs, mark); !ok {
		t.Errorf("marker not seen in the app-side capture (%d payload bytes): the capture is not working", n)
	}
	ok, n := seen(netSegs, mark)
	if ok {
		t.Errorf("marker seen in plaintext on the internet link")
	}
	if n < 1000 {
		t.Errorf("only %d payload bytes captured on the internet link: the capture missed the portal's traffic", n)
	}
	if ok, _ := seen(netSegs, "CREATE TABLE"); ok {
		t.Errorf("SQL seen in plaintext on the internet link")
	}
}

// unreachable asserts that a firewall drops a connection from ns to addr:
// the dial times out. A reset (nothing listening, no firewall) or an ICMP
// error would mean the SYN got through, or was answered, and fails.
func unreachable(t *testing.T, ctx context.Context, ns *testenv.NS, addr string) {
	t.Helper()
	c, err := ns.DialTCP(ctx, addr, time.Second)
	if err == nil {
		c.Close()
	}
	if err := dropped(err); err != nil {
		t.Errorf("from %s, %s: %v", ns.Name(), addr, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("the scenario's time ran out: %v", ctx.Err())
	}
}

// dropped returns nil if err is a dial's own timeout, what a dropped SYN
// gives, and says what happened instead otherwise.
func dropped(err error) error {
	var ne net.Error
	switch {
	case err == nil:
		return errors.New("it answered; want the connection dropped")
	case errors.As(err, &ne) && ne.Timeout():
		return nil
	default:
		return fmt.Errorf("the dial ended with %w; want it dropped (a connect timeout)", err)
	}
}

func testNothingAnswersFromInternet(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	inet := s.Seed.Internet
	// An attacker on the internet may route the companies' private ranges
	// toward their uplinks; the NAT firewalls must still drop everything new.
	for _, r := range [][2]string{{"10.10.0.0/24", "198.18.0.2"}, {"10.20.0.0/24", "198.18.0.3"}} {
		if err := inet.AddRoute(r[0], r[1]); err != nil {
			t.Fatal(err)
		}
	}
	for _, addr := range []string{
		"198.18.0.2:" + scenario.InletPort, // the inlet listens on 0.0.0.0
		"198.18.0.2:22", "198.18.0.3:5432", "198.18.0.3:22",
		"10.10.0.1:" + scenario.InletPort, "10.10.0.2:80",
		"10.20.0.2:5432", "10.20.0.1:5432",
	} {
		unreachable(t, ctx, inet, addr)
	}
}

func testBankCannotReachAnalysis(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	bank := s.Seed.BankHost
	// Same L2 segment as the analysis host's uplink: route straight at it.
	if err := bank.AddRoute("10.10.0.0/24", "198.18.0.2"); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []*testenv.NS{bank, s.Seed.Postgres.NS} {
		for _, addr := range []string{"198.18.0.2:" + scenario.InletPort, "10.10.0.1:" + scenario.InletPort, "10.10.0.2:5432"} {
			unreachable(t, ctx, ns, addr)
		}
	}
	// Through the portal system: the analysis agent owns no relay, so an
	// inlet on the bank's side has nowhere to go.
	if _, err := s.Bank.Ctl(ctx, "tcp-inlet", "create", "--name", "backdoor", "--from", "127.0.0.1:25432", "--via", "analysis", "--allow", "postgres-inlet"); err != nil {
		t.Fatal(err)
	}
	defer s.Bank.Ctl(ctx, "tcp-inlet", "delete", "backdoor")
	if _, err := s.Psql(ctx, bank, "127.0.0.1", "25432", "SELECT 1"); err == nil {
		t.Error("bank reached something through an inlet via relay \"analysis\"")
	}
	if !strings.Contains(s.Bank.Proc.Output(), "no agent has claimed this relay") {
		t.Errorf("bank agent log does not say the relay is unclaimed:\n%s", s.Bank.Proc.Output())
	}
}

func outletCounters(t *testing.T, ctx context.Context, a *scenario.Agent) portal.CounterValues {
	t.Helper()
	out, err := a.Ctl(ctx, "tcp-outlet", "list", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var os []portal.OutletInfo
	if err := json.Unmarshal([]byte(out), &os); err != nil || len(os) != 1 {
		t.Fatalf("tcp-outlet list -o json = %q (%v)", out, err)
	}
	return os[0].Counters
}

func testNodeWithoutAttributeRefused(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	ticket, err := s.Ticket(ctx, "--attribute", "reporting=true")
	if err != nil {
		t.Fatal(err)
	}
	intruder, err := s.StartAgent(ctx, "intruder", s.Seed.AnalysisHost, ticket)
	if err != nil {
		t.Fatal(err)
	}
	defer intruder.Proc.Stop()
	if _, err := intruder.Ctl(ctx, "tcp-inlet", "create", "--from", "127.0.0.1:15433", "--via", scenario.BankRelay, "--allow", "postgres-outlet"); err != nil {
		t.Fatal(err)
	}
	before := outletCounters(t, ctx, s.Bank)
	if out, err := s.Psql(ctx, s.Seed.AnalysisHost, "127.0.0.1", "15433", "SELECT 1"); err == nil {
		t.Fatalf("a node without postgres-inlet reached PostgreSQL: %s", out)
	}
	// The bank's agent published its outlet's policy to the hub, which
	// refuses the dial (docs/hub.md): the outlet never sees the connection.
	if after := outletCounters(t, ctx, s.Bank); after.Accepted != before.Accepted {
		t.Errorf("outlet accepted counter %d -> %d: the hub let a dial through that the outlet's published policy refuses", before.Accepted, after.Accepted)
	}
	out, err := intruder.Ctl(ctx, "tcp-inlet", "list", "-o", "json")
	var ins []portal.InletInfo
	if err != nil || json.Unmarshal([]byte(out), &ins) != nil || len(ins) != 1 {
		t.Fatalf("tcp-inlet list -o json = %q (%v)", out, err)
	}
	if ins[0].Counters.Refused != 1 {
		t.Errorf("intruder's inlet counters %+v, want 1 refused", ins[0].Counters)
	}
	if !strings.Contains(intruder.Proc.Output(), "none allows this node's attributes") {
		t.Errorf("intruder's agent log does not explain the refusal:\n%s", intruder.Proc.Output())
	}
}

// runAgentOnce starts an agent that must fail, and returns its output.
func runAgentOnce(t *testing.T, ctx context.Context, s *scenario.Scenario, name, ticket string) string {
	t.Helper()
	dir := t.TempDir()
	out, err := s.Seed.AnalysisHost.Run(ctx, filepath.Join(bin, "agent"), "run", "--state-dir", filepath.Join(dir, "state"),
		"--api", filepath.Join(dir, "api.sock"), "--ticket", ticket)
	if err == nil {
		t.Fatalf("%s: agent started:\n%s", name, out)
	}
	if strings.Contains(string(out), "panic") || strings.Contains(string(out), "goroutine ") {
		t.Errorf("%s: agent crashed instead of refusing:\n%s", name, out)
	}
	return string(out)
}

func testTicketsRefused(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	used, err := os.ReadFile(filepath.Join(s.Env.Dir(), "analysis.ticket"))
	if err != nil {
		t.Fatal(err)
	}
	expiring, err := s.Ticket(ctx, "--attribute", "postgres-inlet=true", "--expires-in", "1s")
	if err != nil {
		t.Fatal(err)
	}
	otherDir := filepath.Join(t.TempDir(), "other-project")
	if _, err := s.Ctl(ctx, "project", "init", "--dir", otherDir, "--hub-address", s.HubAddress()); err != nil {
		t.Fatal(err)
	}
	foreign, err := s.Ctl(ctx, "ticket", "create", "--project", otherDir, "--attribute", "postgres-inlet=true")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // let the 1s ticket expire
	for _, tc := range []struct{ name, ticket, want string }{
		{"reused", strings.TrimSpace(string(used)), "ticket has already been used"},
		{"expired", expiring, "ticket has expired"},
		{"other authority", strings.TrimSpace(foreign), "hub certificate is not signed by the project authority"},
	} {
		if out := runAgentOnce(t, ctx, s, tc.name, tc.ticket); !strings.Contains(out, tc.want) {
			t.Errorf("%s ticket: output lacks %q:\n%s", tc.name, tc.want, out)
		}
	}
	// A relay name that the analysis agent's ticket did not allow.
	_, err = s.Analysis.Ctl(ctx, "relay", "create", "payments")
	if err == nil || !strings.Contains(err.Error(), "relay name is not allowed for this node") {
		t.Errorf("claiming a relay not on the ticket: %v", err)
	}
}

func testRestart(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	before, err := s.Analysis.Ctl(ctx, "status", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Analysis.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := s.Analysis.Ctl(ctx, "status", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var b, a struct {
		Node   string
		Inlets []portal.InletInfo
	}
	json.Unmarshal([]byte(before), &b)
	json.Unmarshal([]byte(after), &a)
	if a.Node == "" || a.Node != b.Node {
		t.Errorf("node %q after restart, %q before", a.Node, b.Node)
	}
	if len(a.Inlets) != 1 {
		t.Errorf("%d inlets after restart, want the saved one", len(a.Inlets))
	}
	if out, err := s.RunApp(ctx, marker(t)); err != nil || !strings.Contains(out, "successful") {
		t.Errorf("app after restart: %v\n%s", err, out)
	}

	// The command line that first started it, ticket and all (a systemd
	// unit's): the agent ignores the ticket it redeemed.
	used, err := os.ReadFile(filepath.Join(s.Env.Dir(), "analysis.ticket"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Analysis.RestartWithTicket(ctx, strings.TrimSpace(string(used))); err != nil {
		t.Fatalf("restart with the ticket it enrolled with: %v", err)
	}
	if !strings.Contains(s.Analysis.Proc.Output(), "--ticket ignored") {
		t.Errorf("the agent does not say that it ignored its ticket:\n%s", s.Analysis.Proc.OutputTail(2000))
	}
	if out, err := s.RunApp(ctx, marker(t)); err != nil || !strings.Contains(out, "successful") {
		t.Errorf("app after restart with the ticket: %v\n%s", err, out)
	}

	// A second agent on the same state directory refuses at once.
	out, err := s.Seed.AnalysisHost.Run(ctx, filepath.Join(bin, "agent"), "run", "--state-dir", s.Analysis.StateDir,
		"--api", filepath.Join(t.TempDir(), "second.sock"), "--datapath", "off")
	if err == nil || !strings.Contains(string(out), "is in use by another agent (pid ") {
		t.Errorf("a second agent on the state directory: %v\n%s", err, out)
	}
}

// TestDroppedIsATimeout: unreachable's check takes only a connect timeout
// as a drop: not a reset from a port where nothing listens, nor an answer.
func TestDroppedIsATimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	open := ln.Addr().String()
	defer ln.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusing := closed.Addr().String()
	closed.Close()

	_, err = net.Dial("tcp", refusing)
	if err == nil || dropped(err) == nil {
		t.Errorf("a refused dial (%v) counts as dropped", err)
	}
	c, err := net.Dial("tcp", open)
	if err == nil {
		c.Close()
	}
	if dropped(err) == nil {
		t.Errorf("an answered dial (%v) counts as dropped", err)
	}
	// A dial that times out, as one whose SYN a firewall drops does.
	_, err = (&net.Dialer{Timeout: time.Nanosecond}).Dial("tcp", open)
	if err := dropped(err); err != nil {
		t.Errorf("a dial that timed out: %v", err)
	}
}
