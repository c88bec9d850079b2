package chaos_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/testenv"
)

// A fault, injected while pgbench runs through the portal, then repaired.
type fault struct {
	name string
	// hold is how long the fault lasts before it is repaired.
	hold func(cfg chaosConfig) time.Duration
	// inject breaks something and returns what repairs it.
	inject func(ctx context.Context, r *rig) (repair func() error, err error)
	long   bool // only in the long form
}

func fixed(d time.Duration) func(chaosConfig) time.Duration {
	return func(chaosConfig) time.Duration { return d }
}

func lasting(short, long time.Duration) func(chaosConfig) time.Duration {
	return func(c chaosConfig) time.Duration {
		if c.long {
			return long
		}
		return short
	}
}

// crash kills a process with SIGKILL; the repair starts it again.
func crash(name string) func(ctx context.Context, r *rig) (func() error, error) {
	return func(ctx context.Context, r *rig) (func() error, error) {
		r.kill(name)
		return func() error { r.restart(ctx, name); return nil }, nil
	}
}

// loss drops percent of the TCP packets the internet's hosts (the hub)
// send and receive.
func loss(percent int) func(ctx context.Context, r *rig) (func() error, error) {
	return func(ctx context.Context, r *rig) (func() error, error) {
		o, err := r.s.Seed.Internet.DropTCP("", percent)
		if err != nil {
			return nil, err
		}
		return o.Close, nil
	}
}

// uplinkDown takes host's uplink down; the repair brings it up and sets its
// default route again, as a DHCP client would.
func uplinkDown(host func(*rig) *testenv.NS) func(ctx context.Context, r *rig) (func() error, error) {
	return func(ctx context.Context, r *rig) (func() error, error) {
		ns := host(r)
		if err := ns.SetLinkUp(testenv.SeedUplink, false); err != nil {
			return nil, err
		}
		return func() error {
			if err := ns.SetLinkUp(testenv.SeedUplink, true); err != nil {
				return err
			}
			return ns.AddRoute("default", testenv.SeedHubAddr)
		}, nil
	}
}

func flushConntrack(host func(*rig) *testenv.NS) func(ctx context.Context, r *rig) (func() error, error) {
	return func(ctx context.Context, r *rig) (func() error, error) {
		return func() error { return nil }, host(r).FlushConntrack()
	}
}

func analysisHost(r *rig) *testenv.NS { return r.s.Seed.AnalysisHost }
func bankHost(r *rig) *testenv.NS     { return r.s.Seed.BankHost }

var faults = []fault{
	{name: "kill -9 hub, restart", hold: fixed(0), inject: crash("hub")},
	{name: "kill -9 inlet agent, restart", hold: fixed(0), inject: crash("analysis")},
	{name: "kill -9 outlet agent, restart", hold: fixed(0), inject: crash("bank")},
	{name: "kill -9 PostgreSQL, restart", hold: fixed(0), inject: func(ctx context.Context, r *rig) (func() error, error) {
		if err := r.s.Seed.Postgres.KillAll(); err != nil {
			return nil, err
		}
		return func() error {
			p, err := r.s.Seed.RestartPostgres()
			r.s.Postgres = p
			return err
		}, nil
	}},
	{name: "hub unreachable longer than a credential lives", hold: fixed(credentialLifetime + 5*time.Second),
		inject: func(ctx context.Context, r *rig) (func() error, error) {
			o, err := r.s.Seed.Internet.DropTCP("tcp dport 4443", 100)
			if err != nil {
				return nil, err
			}
			return o.Close, nil
		}},
	{name: "inlet host's uplink down", hold: lasting(3*time.Second, 10*time.Second), inject: uplinkDown(analysisHost)},
	{name: "outlet host's uplink down", hold: fixed(10 * time.Second), inject: uplinkDown(bankHost), long: true},
	{name: "1% packet loss on the internet link", hold: fixed(20 * time.Second), inject: loss(1), long: true},
	{name: "10% packet loss on the internet link", hold: lasting(5*time.Second, 20*time.Second), inject: loss(10)},
	{name: "conntrack flushed on the inlet's NAT router", hold: fixed(0), inject: flushConntrack(analysisHost)},
	{name: "conntrack flushed on the outlet's NAT router", hold: fixed(0), inject: flushConntrack(bankHost), long: true},
}

// faultResult is one row of the report.
type faultResult struct {
	during          pgRun
	probes, probeOK int           // new connections tried, and made, while the fault held
	sinceFault      time.Duration // from the fault to the first new connection that works after the repair
	sinceRepair     time.Duration // from the repair to then
	after           pgRun
	plaintext       int64
	leaks           []string
}

// testFaults injects each fault while pgbench runs (4 clients), repairs
// it, and reports what pgbench saw, whether new connections worked while
// it held, how long until they worked again, that a new pgbench run then
// completes without an error, that no plaintext crossed a link outside
// the companies, and that the processes that lived through it are back to
// their descriptors, goroutines and pins at rest.
func testFaults(ctx context.Context, r *rig, cfg chaosConfig) {
	t := r.t
	var rows []string
	for _, f := range faults {
		if f.long && !cfg.long {
			continue
		}
		var res faultResult
		t.Run(f.name, func(t *testing.T) {
			defer r.use(t)()
			res = runFault(ctx, r, cfg, f)
		})
		leaks := "none"
		if len(res.leaks) > 0 {
			leaks = strings.Join(res.leaks, "; ")
		}
		held := "-"
		if res.probes > 0 {
			held = fmt.Sprintf("%d of %d", res.probeOK, res.probes)
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %v / %v | %s | %d | %s |", f.name, res.during.summary(), held,
			res.sinceFault.Round(10*time.Millisecond), res.sinceRepair.Round(10*time.Millisecond), res.after.summary(), res.plaintext, leaks))
	}
	t.Logf("faults while pgbench runs (4 clients):\n| fault | pgbench during the fault | new connections made while it held | working again, since the fault / since the repair | pgbench after | plaintext frames outside | leaks |\n|---|---|---|---|---|---|---|\n%s",
		strings.Join(rows, "\n"))
}

func runFault(ctx context.Context, r *rig, cfg chaosConfig, f fault) faultResult {
	t := r.t
	var res faultResult
	before := r.plaintext()
	hold := f.hold(cfg)
	load, err := r.startPgbench(4, hold+15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)

	injected := time.Now()
	repair, err := f.inject(ctx, r)
	if err != nil {
		t.Fatalf("inject: %v", err)
	}
	for end := injected.Add(hold); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		res.probes++
		if r.probe(ctx) == nil {
			res.probeOK++
		}
	}
	repaired := time.Now()
	if err := repair(); err != nil {
		t.Fatalf("repair: %v", err)
	}
	if _, err := r.waitWorking(ctx); err != nil {
		t.Error(err)
	}
	res.sinceFault, res.sinceRepair = time.Since(injected), time.Since(repaired)
	load.Wait() // pgbench's own verdict is in its output
	res.during = parsePgbench(load.Output())

	after, err := r.startPgbench(4, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	after.Wait()
	res.after = parsePgbench(after.Output())
	if res.after.failed() {
		t.Errorf("pgbench after the repair: %s\n%s", res.after.summary(), tailLines(after.Output(), 20))
	}
	for n, h := range r.plaintext() {
		res.plaintext += h - before[n]
	}
	if res.plaintext > 0 {
		t.Errorf("%d frames of plaintext outside the companies during the fault", res.plaintext)
	}
	res.leaks = r.quiesce(ctx)
	for _, l := range res.leaks {
		t.Errorf("after the fault: %s", l)
	}
	t.Logf("%s: pgbench during: %s; new connections while it held: %d of %d; working again %v after the fault, %v after the repair; pgbench after: %s",
		f.name, res.during.summary(), res.probeOK, res.probes, res.sinceFault.Round(10*time.Millisecond), res.sinceRepair.Round(10*time.Millisecond), res.after.summary())
	if res.during.failed() {
		t.Logf("pgbench's errors during the fault:\n%s", strings.Join(res.during.lines, "\n"))
	}
	return res
}

// pgRun is what a pgbench run through the portal reported.
type pgRun struct {
	transactions, aborted, failedTx int
	stalled                         int            // seconds of progress (-P 1) without a transaction
	errors                          map[string]int // kind -> lines
	tps                             string
	lines                           []string // distinct error lines, numbers blanked
}

var (
	pgProcessed = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
	pgFailed    = regexp.MustCompile(`number of failed transactions: (\d+)`)
	pgAborted   = regexp.MustCompile(`client \d+ aborted`)
	pgTPS       = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
	digits      = regexp.MustCompile(`[0-9]+`)
	pgProgress  = regexp.MustCompile(`progress: [0-9.]+ s, ([0-9.]+) tps`)
)

// errorKinds names the errors pgbench (libpq) prints, by what the portal
// did: a reset, a clean end in the middle of a query, a connection that
// could not be made.
var errorKinds = []struct{ kind, text string }{
	{"reset", "Connection reset by peer"},
	{"closed", "server closed the connection unexpectedly"},
	{"connect", "connection to server at"},
	{"terminated", "terminating connection"},
	{"timeout", "timeout"},
}

func parsePgbench(out string) pgRun {
	r := pgRun{errors: map[string]int{}}
	if m := pgProcessed.FindStringSubmatch(out); m != nil {
		fmt.Sscan(m[1], &r.transactions)
	}
	if m := pgFailed.FindStringSubmatch(out); m != nil {
		fmt.Sscan(m[1], &r.failedTx)
	}
	if m := pgTPS.FindStringSubmatch(out); m != nil {
		r.tps = m[1]
	}
	r.aborted = len(pgAborted.FindAllString(out, -1))
	for _, m := range pgProgress.FindAllStringSubmatch(out, -1) {
		if m[1] == "0.0" {
			r.stalled++
		}
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		if l := digits.ReplaceAllString(strings.TrimSpace(line), "N"); strings.Contains(line, "error") && !seen[l] {
			seen[l] = true
			r.lines = append(r.lines, l)
		}
		for _, k := range errorKinds {
			if strings.Contains(line, k.text) {
				r.errors[k.kind]++
				break
			}
		}
	}
	return r
}

// failed reports whether the run saw any error.
func (p pgRun) failed() bool {
	return p.aborted > 0 || p.failedTx > 0 || len(p.errors) > 0 || p.transactions == 0
}

func (p pgRun) summary() string {
	s := fmt.Sprintf("%d tx", p.transactions)
	if p.tps != "" {
		s += fmt.Sprintf(" (%s tps)", strings.SplitN(p.tps, ".", 2)[0])
	}
	if p.stalled > 0 {
		s += fmt.Sprintf(", stalled %ds", p.stalled)
	}
	if p.aborted > 0 {
		s += fmt.Sprintf(", %d clients aborted", p.aborted)
	}
	for _, k := range errorKinds {
		if n := p.errors[k.kind]; n > 0 {
			s += fmt.Sprintf(", %d %q", n, k.text)
		}
	}
	return s
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
