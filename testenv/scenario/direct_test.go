package scenario_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/api/apitype"
	"github.com/sluicehq/sluice/testenv"
	"github.com/sluicehq/sluice/testenv/scenario"
)

// The direct paths of issue 15: two agents behind NATs that drop every new
// inbound connection talk over a TCP simultaneous open the hub coordinates,
// and through the hub where that cannot work. Each test builds one
// topology and one PostgreSQL, and runs pgbench -S through the portal's
// explicit inlet (the app container dials 10.10.0.1:15432).

// directInlet is where the app container reaches the open explicit inlet.
var directInlet = net.JoinHostPort(testenv.SeedAnalysisGW, scenario.InletPort)

// TestDirectPathSeed: in the seed topology (each agent's host its own NAT
// firewall, no hole in either), pgbench goes direct, the hub relays none of
// its bytes, and revoking the inlet's node closes a direct channel within a
// second.
func TestDirectPathSeed(t *testing.T) {
	ctx, s, bank := startGoneDirect(t, nil)

	t.Run("Revoked", func(t *testing.T) {
		c, err := openSessionAt(ctx, s.Seed.App.NS, directInlet)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		expectPath(t, ctx, s.Analysis, bank, "direct")
		start := time.Now()
		if err := member(s, "revoke", nodeOf(t, ctx, s.Analysis))(ctx); err != nil {
			t.Fatal(err)
		}
		closedWithin(t, "direct channel of a revoked node", c, start.Add(policyWithin))
		t.Logf("revocation closed the direct session after %v", time.Since(start).Round(time.Millisecond))
	})
}

// TestDirectPathBehindNAT: behind NAT routers that keep ports, pgbench
// goes direct and the hub relays none of its bytes. Then the routers
// forget their connections (conntrack flushed) while pgbench runs:
//
//   - on the inlet's router with the kernel's default tracking
//     (nf_conntrack_tcp_loose 1), a quiet direct session: the inlet's next
//     packet creates a new mapping with the same port and the session goes
//     on (with pgbench running, a response of the outlet's in flight at
//     the flush is dropped, and the flow lives only if the inlet's side
//     sends before the outlet's TCP_USER_TIMEOUT: once in about ten runs
//     it did not, a client was cut and the peer went relayed);
//   - on the outlet's router with strict tracking (tcp_loose 0, as a NAT
//     that lost its state), the flows with the inlet's router only (the
//     control links to the hub keep theirs): every packet of the old flows
//     is dropped; the inlet detects it, pgbench's connections are reset
//     (errors, never wrong data), new connections work (through the hub)
//     from then on, one in flight at the flush is reset at the detection,
//     and the peer is direct again after a background attempt;
//   - idle warm direct channels on flows the outlet's router forgot: the
//     next connection finds them dead at its open request and goes
//     through the hub, answered (FlushIdle);
//   - the whole table on the outlet's router, strict: the bank agent's
//     control link breaks too; the times until the portal serves again and
//     is direct again are logged.
//
// The times to detect the break and to be direct again are logged.
func TestDirectPathBehindNAT(t *testing.T) {
	ctx, s, bank := startGoneDirect(t, &testenv.NATOptions{})

	t.Run("FlushLoose", func(t *testing.T) {
		// A session on a direct channel, quiet after a round trip: the
		// inlet's side speaks first after the flush, so its packet makes
		// the new mapping (with nothing of the outlet's in flight, whose
		// packets would be dropped as new on the uplink until then).
		c, err := openSessionAt(ctx, s.Seed.App.NS, directInlet)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		expectPath(t, ctx, s.Analysis, bank, "direct")
		if err := s.Seed.AnalysisRouter.FlushConntrack(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		var b [1]byte
		if _, err = c.Write(sslRequest); err == nil {
			_, err = io.ReadFull(c, b[:])
		}
		// A second SSLRequest is out of protocol: PostgreSQL answers it
		// with an ErrorResponse ('E'), which proves the round trip too.
		if err != nil || b[0] != 'E' {
			t.Errorf("a direct session after the inlet's router flushed its conntrack table (tcp_loose 1): %q, %v; want PostgreSQL's ErrorResponse", b[0], err)
		}
		t.Logf("a direct session across a flush of the inlet's router (tcp_loose 1) answered in %v", time.Since(start).Round(10*time.Microsecond))
		// The other flows (warm channels, the control link) may have
		// lost a race with the outlet's packets: the peer is direct
		// again, at the latest after a background attempt.
		if _, err := waitPath(ctx, s.Analysis, bank, "direct", time.Now(), 60*time.Second); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("FlushStrict", func(t *testing.T) {
		if err := s.Seed.BankRouter.SetSysctl("net.netfilter.nf_conntrack_tcp_loose", "0"); err != nil {
			t.Fatal(err)
		}
		p := startPgbench(t, s, 2, 20*time.Second)
		time.Sleep(1500 * time.Millisecond)
		loop := startSessionLoop(ctx, s.Seed.App.NS)
		time.Sleep(500 * time.Millisecond)
		broke := time.Now()
		n, err := s.Seed.BankRouter.FlushConntrackWith(netip.MustParseAddr(testenv.SeedAnalysisUp))
		if err != nil {
			t.Fatal(err)
		}
		flushed := time.Now() // sessions opened before this were in flight at the break
		t.Logf("the outlet's router forgot %d flows with the inlet's router (in %v)", n, flushed.Sub(broke).Round(time.Millisecond))
		detected, err := waitPath(ctx, s.Analysis, bank, "relayed", broke, 15*time.Second)
		if err != nil {
			t.Fatalf("the break was not detected: %v", err)
		}
		back, err := waitPath(ctx, s.Analysis, bank, "direct", broke, 60*time.Second)
		if err != nil {
			t.Fatalf("the peer did not come back to direct: %v", err)
		}
		attempts := loop.stop()
		tx, aborted, errs := pgbenchResult(t, p, 30*time.Second)
		t.Logf("the outlet's router forgot the direct flows (tcp_loose 0): break detected after %v, direct again after %v; pgbench: %d transactions, %d clients aborted, errors %q",
			detected.Round(time.Millisecond), back.Round(time.Millisecond), tx, aborted, errs)
		if aborted == 0 {
			t.Errorf("pgbench's direct connections survived a flush of the outlet's router with strict tracking:\n%s", p.OutputTail(2000))
		}
		// New connections work: through the hub, or on a fresh direct
		// flow, which the flush did not touch. One that takes a warm
		// channel on a dead flow finds the path dead when its open request
		// goes unacknowledged (openWarm, warmAckWait) and goes through
		// another channel, none of its bytes read: it is neither reset nor
		// held until TCP_USER_TIMEOUT.
		noticed := broke.Add(detected)
		var failed, cut []string
		var window int // sessions opened between the break and its detection
		for _, a := range attempts {
			if a.at.After(broke) && a.at.Before(noticed) {
				window++
			}
			switch {
			case a.err == nil || a.at.Before(broke):
			case a.at.Before(flushed) && errors.Is(a.err, syscall.ECONNRESET):
				cut = append(cut, fmt.Sprintf("opened %v after the flush began, reset after %v",
					a.at.Sub(broke).Round(time.Millisecond), a.took.Round(time.Millisecond)))
			default:
				failed = append(failed, fmt.Sprintf("%v after the break, after %v: %v", a.at.Sub(broke).Round(time.Millisecond), a.took.Round(time.Millisecond), a.err))
			}
		}
		var after []time.Duration
		for _, a := range attempts {
			if a.err == nil && a.at.After(noticed) {
				after = append(after, a.took)
			}
		}
		slices.Sort(after)
		if len(after) > 0 {
			t.Logf("connect loop: %d sessions; of the %d opened between the break and its detection, %d reset (%s); after it, %d answered in %v median, %v max",
				len(attempts), window, len(cut), strings.Join(cut, "; "), len(after), after[len(after)/2].Round(10*time.Microsecond), after[len(after)-1].Round(10*time.Microsecond))
		}
		if len(failed) > 0 {
			t.Errorf("new connections failed after the break:\n%s", strings.Join(failed, "\n"))
		}
		runPgbenchClean(t, s, 2, 2*time.Second)
		expectPath(t, ctx, s.Analysis, bank, "direct")
	})

	// Idle warm direct channels on flows the outlet's router forgot
	// (strict): the next connection takes one, its open request goes
	// unacknowledged, and the inlet takes the path for broken then
	// (openWarm, warmAckWait) instead of at TCP_USER_TIMEOUT, and serves the
	// connection through the hub: it works, none of its bytes lost.
	t.Run("FlushIdle", func(t *testing.T) {
		if err := s.Seed.BankRouter.SetSysctl("net.netfilter.nf_conntrack_tcp_loose", "0"); err != nil {
			t.Fatal(err)
		}
		runPgbenchClean(t, s, 2, time.Second) // leaves warm direct channels
		expectPath(t, ctx, s.Analysis, bank, "direct")
		before := directCounters(t, ctx, s.Analysis)
		if _, err := s.Seed.BankRouter.FlushConntrackWith(netip.MustParseAddr(testenv.SeedAnalysisUp)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := sessionRoundTrip(ctx, s.Seed.App.NS); err != nil {
			t.Fatalf("a new connection over idle direct channels whose flows the outlet's router forgot: %v", err)
		}
		took := time.Since(start)
		after := directCounters(t, ctx, s.Analysis)
		t.Logf("a new connection after the flush found the idle direct channels dead and was answered through the hub in %v; breaks %d -> %d",
			took.Round(time.Millisecond), before.Breaks, after.Breaks)
		if after.Breaks <= before.Breaks {
			t.Errorf("the inlet did not count the break it found (breaks %d -> %d)", before.Breaks, after.Breaks)
		}
		if _, err := waitPath(ctx, s.Analysis, bank, "direct", time.Now(), 60*time.Second); err != nil {
			t.Fatal(err)
		}
	})

	// The whole table, on the outlet's router, strict: the bank agent's
	// control link to the hub breaks too, so new connections fail until
	// it is back; only the times are logged, and that pgbench saw cuts,
	// not wrong data.
	t.Run("FlushAllStrict", func(t *testing.T) {
		p := startPgbench(t, s, 2, 20*time.Second)
		time.Sleep(1500 * time.Millisecond)
		broke := time.Now()
		if err := s.Seed.BankRouter.FlushConntrack(); err != nil {
			t.Fatal(err)
		}
		detected, err := waitPath(ctx, s.Analysis, bank, "relayed", broke, 15*time.Second)
		if err != nil {
			t.Fatalf("the break was not detected: %v", err)
		}
		var served time.Duration
		for {
			c, err := openSessionAt(ctx, s.Seed.App.NS, directInlet)
			if err == nil {
				c.Close()
				served = time.Since(broke)
				break
			}
			if time.Since(broke) > 60*time.Second {
				t.Fatalf("no new connection through the portal 60 s after the outlet's router flushed its conntrack: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		back, err := waitPath(ctx, s.Analysis, bank, "direct", broke, 60*time.Second)
		if err != nil {
			t.Fatalf("the peer did not come back to direct: %v", err)
		}
		tx, aborted, errs := pgbenchResult(t, p, 30*time.Second)
		t.Logf("the outlet's router flushed its whole conntrack table (tcp_loose 0): break detected after %v, a new connection served again after %v, direct again after %v; pgbench: %d transactions, %d clients aborted, errors %q",
			detected.Round(time.Millisecond), served.Round(time.Millisecond), back.Round(time.Millisecond), tx, aborted, errs)
		if aborted == 0 {
			t.Errorf("pgbench's direct connections survived a flush of the outlet's router with strict tracking:\n%s", p.OutputTail(2000))
		}
	})
}

// TestDirectPathRandomNAT: behind NATs that map each connection to a
// random port, no direct path can be punched: the hub never offers one,
// pgbench goes through the hub, and the first connection's setup costs no
// more than a later one's by a margin the test logs.
func TestDirectPathRandomNAT(t *testing.T) {
	ctx, s := startDirect(t, &testenv.NATOptions{Random: true})
	logSetup(t, ctx, s)
	runPgbenchClean(t, s, 2, 3*time.Second)
	expectPath(t, ctx, s.Analysis, nodeOf(t, ctx, s.Bank), "relayed")
	expectCounters(t, ctx, s, "not offered")
	n := relayedAfterRestart(t, ctx, s)
	if n == 0 {
		t.Fatal("the hub relayed no byte of pgbench's sessions behind randomizing NATs")
	}
	t.Logf("the hub relayed %d bytes", n)
}

// TestDirectPathBlocked: behind NAT routers that keep ports, with a
// firewall on the outlet's router that drops everything from the inlet's
// router (the control links to the hub pass), the direct attempt fails and
// the portal falls back to the hub: pgbench works, the peer is relayed,
// and the extra setup time of the first connection (the attempt's
// timeout) is logged against the later ones'.
func TestDirectPathBlocked(t *testing.T) {
	ctx, s := startDirect(t, &testenv.NATOptions{})
	block, err := s.Seed.BankRouter.DropTCP("ip saddr "+testenv.SeedAnalysisUp, 100)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { block.Close() })
	logSetup(t, ctx, s)
	runPgbenchClean(t, s, 2, 2*time.Second)
	expectPath(t, ctx, s.Analysis, nodeOf(t, ctx, s.Bank), "relayed")
	expectCounters(t, ctx, s, "failed")
}

// startGoneDirect starts the scenario (startDirect), runs pgbench through
// the portal and checks that it went direct, the hub relaying none of its
// bytes; it returns the bank agent's node.
func startGoneDirect(t *testing.T, nat *testenv.NATOptions) (context.Context, *scenario.Scenario, string) {
	t.Helper()
	ctx, s := startDirect(t, nat)
	logSetup(t, ctx, s)
	runPgbenchClean(t, s, 2, 3*time.Second)
	bank := nodeOf(t, ctx, s.Bank)
	expectPath(t, ctx, s.Analysis, bank, "direct")
	expectCounters(t, ctx, s, "direct")
	expectNoneRelayed(t, ctx, s)
	return ctx, s, bank
}

// startDirect starts the scenario with the open explicit inlet and the
// metrics, in the seed topology (nat nil) or behind NAT routers, and
// creates pgbench's tables.
func startDirect(t *testing.T, nat *testenv.NATOptions) (context.Context, *scenario.Scenario) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end scenario skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	s := startScenarioWith(t, ctx, scenario.Options{Mode: scenario.Explicit, OpenExplicit: true, Metrics: true, NAT: nat})
	if out, err := s.Seed.Postgres.NS.RunOpts(ctx, []string{"pgbench", "-h", testenv.SeedPostgresAddr, "-p", testenv.PostgresPort,
		"-U", "postgres", "-i", "-s", "1", "-q", "postgres"}, testenv.ProcOptions{Env: []string{"PGPASSWORD=" + scenario.PGPassword}}); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	return ctx, s
}

// startPgbench runs pgbench -S in the app container through the inlet.
func startPgbench(t *testing.T, s *scenario.Scenario, clients int, d time.Duration) *testenv.Process {
	t.Helper()
	argv := []string{"pgbench", "-h", testenv.SeedAnalysisGW, "-p", scenario.InletPort, "-U", "postgres", "-n", "-S",
		"-c", strconv.Itoa(clients), "-j", "1", "-T", strconv.Itoa(int(d.Seconds())), "postgres"}
	p, err := s.Seed.App.NS.Start("pgbench", argv, testenv.ProcOptions{Cgroup: s.Seed.App.Cgroup,
		Env: []string{"PGPASSWORD=" + scenario.PGPassword, "PGCONNECT_TIMEOUT=5"}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runPgbenchClean runs pgbench -S and fails the test unless it ran
// transactions without an error.
func runPgbenchClean(t *testing.T, s *scenario.Scenario, clients int, d time.Duration) {
	t.Helper()
	p := startPgbench(t, s, clients, d)
	tx, aborted, errs := pgbenchResult(t, p, d+15*time.Second)
	if tx == 0 || aborted > 0 || len(errs) > 0 {
		t.Fatalf("pgbench through the portal: %d transactions, %d clients aborted, errors %q\n%s", tx, aborted, errs, p.OutputTail(2000))
	}
	t.Logf("pgbench -S -c %d for %v: %d transactions", clients, d, tx)
}

// pgbenchResult waits (up to d) for pgbench to end and returns the
// transactions it processed, the clients it aborted and its distinct error
// lines. It fails the test if pgbench hangs or prints an error that is not
// a connection cut (a reset, or the server closing it): a session the
// portal cut short must never deliver wrong or truncated data.
func pgbenchResult(t *testing.T, p *testenv.Process, d time.Duration) (tx, aborted int, errs []string) {
	t.Helper()
	select {
	case <-p.Exited():
	case <-time.After(d):
		t.Fatalf("pgbench hangs %v past its end:\n%s", d, p.OutputTail(3000))
	}
	out := p.Output()
	if m := pgbenchProcessed.FindStringSubmatch(out); m != nil {
		tx, _ = strconv.Atoi(m[1])
	}
	aborted = len(pgbenchAborted.FindAllString(out, -1))
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if !strings.Contains(line, "error") && !strings.Contains(line, "server closed") && !strings.Contains(line, "reset") ||
			strings.Contains(line, "number of failed transactions") {
			continue
		}
		if l := pgbenchNumbers.ReplaceAllString(line, "N"); !slices.Contains(errs, l) {
			errs = append(errs, l)
		}
		if !connectionCut(line) {
			t.Errorf("pgbench printed an error that is not a connection cut: %q\n%s", line, p.OutputTail(3000))
		}
	}
	return tx, aborted, errs
}

// connectionCut tells whether a pgbench error line says its connection was
// cut, and nothing else.
func connectionCut(line string) bool {
	for _, s := range []string{"server closed the connection unexpectedly", "Connection reset by peer",
		"could not receive data from server", "perhaps the backend died while processing",
		"Run was aborted; the above results are incomplete"} {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

// peerStatus is one peer of `agentctl status -o json`.
type peerStatus struct {
	Node string `json:"node"`
	Path string `json:"path"`
}

// peers reads an agent's peers from its status.
func peers(ctx context.Context, a *scenario.Agent) ([]peerStatus, string, error) {
	out, err := a.Ctl(ctx, "status", "-o", "json")
	if err != nil {
		return nil, out, err
	}
	var st struct {
		Peers []peerStatus `json:"peers"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, out, fmt.Errorf("status -o json: %w", err)
	}
	return st.Peers, out, nil
}

// pathTo is the agent's path to the peer node ("" if not a peer).
func pathTo(ctx context.Context, a *scenario.Agent, node string) (string, string, error) {
	ps, out, err := peers(ctx, a)
	if err != nil {
		return "", out, err
	}
	for _, p := range ps {
		if p.Node == node {
			return p.Path, out, nil
		}
	}
	return "", out, nil
}

// expectPath checks the agent's path to node.
func expectPath(t *testing.T, ctx context.Context, a *scenario.Agent, node, want string) {
	t.Helper()
	got, out, err := pathTo(ctx, a, node)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("the %s agent's path to %s is %q, want %q; status:\n%s", a.Name, node, got, want, out)
	}
}

// waitPath waits until the agent's path to node is want, and returns how
// long after since that was seen.
func waitPath(ctx context.Context, a *scenario.Agent, node, want string, since time.Time, limit time.Duration) (time.Duration, error) {
	for {
		got, out, err := pathTo(ctx, a, node)
		if err != nil {
			return 0, err
		}
		if got == want {
			return time.Since(since), nil
		}
		if time.Since(since) > limit {
			return 0, fmt.Errorf("path to %s still %q after %v, want %q; status:\n%s", node, got, limit, want, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hubRelayed reads the bytes the hub relayed in data sessions that ended.
func hubRelayed(ctx context.Context, s *scenario.Scenario) (int64, error) {
	return hubMetric(ctx, s, "sluice_hub_relayed_bytes_total")
}

// hubMetric reads a metric of the hub that has no labels.
func hubMetric(ctx context.Context, s *scenario.Scenario, name string) (int64, error) {
	code, body, err := scenario.Get(ctx, s.Seed.Internet, "/metrics")
	if err != nil {
		return 0, err
	}
	if code != 200 {
		return 0, fmt.Errorf("hub metrics: status %d", code)
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int64(f), err
		}
	}
	return 0, fmt.Errorf("hub metrics: no %s", name)
}

// directCounters reads the direct_paths counters of an agent's status.
func directCounters(t *testing.T, ctx context.Context, a *scenario.Agent) apitype.DirectCounters {
	t.Helper()
	out, err := a.Ctl(ctx, "status", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var st apitype.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, out)
	}
	return st.DirectPaths
}

// expectCounters checks the inlet agent's direct path counters and the
// hub's punches against how the direct attempts went: "direct" (they
// worked: no channel relayed), "failed" (offered, none worked) or "not
// offered" (the hub saw a NAT that changes ports and offered none).
func expectCounters(t *testing.T, ctx context.Context, s *scenario.Scenario, want string) {
	t.Helper()
	c := directCounters(t, ctx, s.Analysis)
	punches, err := hubMetric(ctx, s, "sluice_hub_punches_total")
	if err != nil {
		t.Fatal(err)
	}
	direct, err := hubMetric(ctx, s, "sluice_hub_direct_sessions_total")
	if err != nil {
		t.Fatal(err)
	}
	var ok bool
	switch want {
	case "direct":
		ok = c.AttemptsOK > 0 && c.ChannelsDirect > 0 && c.ChannelsRelayed == 0 && c.AttemptsFailed == 0 && punches > 0 && direct > 0
	case "failed":
		ok = c.AttemptsFailed > 0 && c.AttemptsOK == 0 && c.ChannelsDirect == 0 && punches > 0 && direct == 0
	case "not offered":
		ok = c.NotOffered > 0 && c.AttemptsOK == 0 && c.AttemptsFailed == 0 && c.ChannelsDirect == 0 && punches == 0 && direct == 0
	}
	t.Logf("inlet agent's direct paths: %+v; hub: %d punches, %d direct sessions", c, punches, direct)
	if !ok {
		t.Errorf("direct path counters do not say %q", want)
	}
}

// relayedAfterRestart restarts the inlet's agent, which ends every channel
// it had (the hub's counter covers data connections that ended, and warm
// channels carry many sessions each), and returns the bytes the hub
// relayed, read until it is non-zero or for a second.
func relayedAfterRestart(t *testing.T, ctx context.Context, s *scenario.Scenario) int64 {
	t.Helper()
	if err := s.Analysis.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	var n int64
	for deadline := time.Now().Add(time.Second); n == 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var err error
		if n, err = hubRelayed(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// expectNoneRelayed checks that the hub relayed no byte of the sessions so
// far (TestDirectPathRandomNAT sees the same reading rise when they went
// through the hub).
func expectNoneRelayed(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	t.Helper()
	if n := relayedAfterRestart(t, ctx, s); n != 0 {
		t.Errorf("the hub relayed %d bytes of direct sessions", n)
	}
}

// logSetup logs how long the first connection through the portal took to
// answer, and the median of the next ten: the first pays for a direct
// attempt (and its fallback, where it fails), the others may take warm
// channels.
func logSetup(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	t.Helper()
	var took []time.Duration
	for i := 0; i < 11; i++ {
		start := time.Now()
		c, err := openSessionAt(ctx, s.Seed.App.NS, directInlet)
		if err != nil {
			t.Fatalf("connection %d through the portal: %v", i, err)
		}
		took = append(took, time.Since(start))
		c.Close()
		time.Sleep(50 * time.Millisecond)
	}
	later := slices.Clone(took[1:])
	slices.Sort(later)
	t.Logf("setup to PostgreSQL's first answer: first connection %v, later ones median %v (min %v, max %v)",
		took[0].Round(10*time.Microsecond), later[len(later)/2].Round(10*time.Microsecond),
		later[0].Round(10*time.Microsecond), later[len(later)-1].Round(10*time.Microsecond))
}

// sessionLoop opens a session through the portal every 100 ms, each with a
// round trip to PostgreSQL (sessionRoundTrip) and without waiting for the
// others, and records each outcome.
type sessionLoop struct {
	done     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex // guards attempts
	attempts []sessionTry
}

type sessionTry struct {
	at   time.Time     // when the attempt began
	took time.Duration // until it was answered or failed
	err  error
}

func startSessionLoop(ctx context.Context, ns *testenv.NS) *sessionLoop {
	l := &sessionLoop{done: make(chan struct{})}
	l.wg.Go(func() {
		for {
			select {
			case <-l.done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			// Each on its own: one that hangs until the break is
			// noticed does not hold back the next.
			l.wg.Go(func() {
				start := time.Now()
				err := sessionRoundTrip(ctx, ns)
				l.mu.Lock()
				l.attempts = append(l.attempts, sessionTry{start, time.Since(start), err})
				l.mu.Unlock()
			})
		}
	})
	return l
}

// sessionRoundTrip opens a session through the portal, does one round trip
// with PostgreSQL and closes it. It waits up to 15 s for the answer: longer
// than the direct path takes to notice a break.
func sessionRoundTrip(ctx context.Context, ns *testenv.NS) error {
	c, err := ns.DialTCP(ctx, directInlet, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write(sslRequest); err != nil {
		return err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return err
	}
	if b[0] != 'S' && b[0] != 'N' {
		return fmt.Errorf("PostgreSQL answered %q to an SSLRequest", b[0])
	}
	return nil
}

// stop ends the loop and returns its attempts.
func (l *sessionLoop) stop() []sessionTry {
	close(l.done)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.attempts
}
