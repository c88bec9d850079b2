package chaos_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/daemon"
	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/testenv"
	"github.com/sluicehq/sluice/testenv/scenario"
)

// The rig is the seed story (transparent inlet to PostgreSQL) with, beside
// it, a stream service: a second outlet on the bank agent and a second
// transparent inlet on the analysis agent, to a service the test itself
// runs in the PostgreSQL container.
//
//	app ns (the test, pgbench) ─> analysis agent ─> hub ─> bank agent ─> postgres ns
//	    10.200.0.10:5432  transparent inlet "postgres" ──> outlet "postgres" ─> PostgreSQL
//	    10.200.0.11:7000  transparent inlet "streams"  ──> outlet "streams"  ─> the test
const (
	streamService      = "10.200.0.11:7000"
	streamListen       = testenv.SeedPostgresAddr + ":7000"
	streamName         = "streams"
	credentialLifetime = 15 * time.Second // the shortest the hub allows is 10s
	shutdownTimeout    = 10 * time.Second
	// pgQuery is in every pgbench transaction: plaintext where it must be
	// (the app's and PostgreSQL's links), never outside the companies.
	pgQuery = "pgbench_accounts"
)

// step bounds how long any one step may take before the test gives up.
const step = 60 * time.Second

// processes the rig measures.
var processes = []string{"hub", "analysis", "bank"}

// rig is one running seed story.
type rig struct {
	t       *testing.T
	env     *testenv.Env
	s       *scenario.Scenario
	debug   bool // the binaries serve --debug-socket (goroutine counts)
	streams *streamServer
	inside  []*testenv.Scan // links where plaintext belongs
	outside []*testenv.Scan // links outside the companies' networks
	// baselines are each process's descriptors and goroutines when it had
	// settled after it started, by name; pins the data path's.
	baselines map[string]procStat
	pins      []string
}

func newRig(t *testing.T, ctx context.Context) *rig {
	t.Helper()
	env := testenv.NewT(t)
	r := &rig{t: t, env: env, debug: hasFlag("agent", "--debug-socket", "hub"), baselines: map[string]procStat{}}
	opts := scenario.Options{Bin: bin, Mode: scenario.Transparent, CredentialLifetime: credentialLifetime,
		Progress: func(m string) { t.Log(m) }, AgentArgs: map[string][]string{}}
	if r.debug {
		opts.HubArgs = []string{"--debug-socket", r.debugSocket("hub"), "--shutdown-timeout", shutdownTimeout.String()}
		for _, a := range []string{"analysis", "bank"} {
			// Warm channels live 2s instead of 30: the story comes to rest
			// sooner after each fault (quiesce).
			opts.AgentArgs[a] = []string{"--debug-socket", r.debugSocket(a), "--shutdown-timeout", shutdownTimeout.String(), "--warm-idle", "2s"}
		}
	} else {
		t.Logf("the binaries in %s have no --debug-socket: goroutines are not counted", bin)
	}
	if hasFlag("agent", "--direct-paths", "run") {
		// The faults and the truncation trials are about the sessions the
		// hub relays (a hub killed mid-stream must reset them): no direct
		// paths (docs/direct-paths.md).
		for _, a := range []string{"analysis", "bank"} {
			opts.AgentArgs[a] = append(opts.AgentArgs[a], "--direct-paths", "off")
		}
	}
	s, err := scenario.New(env, opts)
	if err != nil {
		t.Fatal(err)
	}
	r.s = s
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close scenario: %v", err)
		}
	})
	r.scan()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	r.step("pgbench -i -s 1 in PostgreSQL's container")
	if _, err := r.pgbenchLocal(ctx, "-i", "-s", "1", "-q"); err != nil {
		t.Fatal(err)
	}
	r.step("the stream service on " + streamListen + ", an outlet and a transparent inlet " + streamService + " to it")
	if r.streams, err = startStreams(s.Seed.Postgres.NS); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Bank.Ctl(ctx, "tcp-outlet", "create", "--name", streamName, "--to", streamListen, "--allow", "postgres-inlet"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Analysis.Ctl(ctx, "tcp-inlet", "create", "--transparent", "--name", streamName, "--from", streamService,
		"--via", scenario.BankRelay, "--outlet", streamName, "--allow", "postgres-outlet", "--allow-local", scenario.AllowLocal); err != nil {
		t.Fatal(err)
	}
	if _, err := r.waitWorking(ctx); err != nil {
		t.Fatal(err)
	}
	r.step("pgbench through the portal, 2 clients for 2s")
	p, err := r.startPgbench(2, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	p.Wait()
	if run := parsePgbench(p.Output()); run.failed() {
		t.Fatalf("pgbench through the portal: %s\n%s", run.summary(), tailLines(p.Output(), 20))
	}
	return r
}

func (r *rig) step(msg string) { r.t.Log(msg) }

func (r *rig) debugSocket(name string) string { return filepath.Join(r.env.Dir(), name+"-debug.sock") }

// scan watches the links: the app's and PostgreSQL's (plaintext belongs
// there; the scans prove they see it), the internet's bridge and both
// companies' uplinks (it must never be seen there).
func (r *rig) scan() {
	seed := r.s.Seed
	for _, l := range []struct {
		ns      *testenv.NS
		ifname  string
		outside bool
	}{{seed.App.NS, "eth0", false}, {seed.Postgres.NS, "eth0", false},
		{seed.Internet, testenv.SeedWAN, true}, {seed.AnalysisHost, testenv.SeedUplink, true}, {seed.BankHost, testenv.SeedUplink, true}} {
		sc, err := l.ns.Scan(l.ifname, pgQuery, streamMarker)
		if err != nil {
			r.t.Fatal(err)
		}
		if l.outside {
			r.outside = append(r.outside, sc)
		} else {
			r.inside = append(r.inside, sc)
		}
	}
}

// plaintext returns the frames with plaintext seen so far outside the
// companies' networks, by needle.
func (r *rig) plaintext() map[string]int64 {
	out := map[string]int64{}
	for _, sc := range r.outside {
		for n, h := range sc.Result().Hits {
			out[n] += h
		}
	}
	return out
}

// checkScans fails the test if plaintext crossed a link outside the
// companies, after checking that the scans see it where it belongs.
func (r *rig) checkScans() {
	r.t.Helper()
	for _, n := range []string{pgQuery, streamMarker} {
		var seen int64
		for _, sc := range r.inside {
			seen += sc.Result().Hits[n]
		}
		if seen == 0 {
			r.t.Errorf("%q never seen on the app's or PostgreSQL's link: the scans do not work", n)
		}
	}
	var packets int64
	for _, sc := range r.outside {
		packets += sc.Result().Packets
	}
	if packets < 1000 {
		r.t.Errorf("only %d frames seen outside the companies: the scans missed the portal's traffic", packets)
	}
	for n, h := range r.plaintext() {
		if h > 0 {
			r.t.Errorf("%q seen in plaintext in %d frames outside the companies' networks", n, h)
		}
	}
}

// proc returns the process now running as name.
func (r *rig) proc(name string) *testenv.Process {
	switch name {
	case "hub":
		return r.s.Hub
	case "analysis":
		return r.s.Analysis.Proc
	case "bank":
		return r.s.Bank.Proc
	}
	r.t.Fatalf("no process %q", name)
	return nil
}

// kill kills name with SIGKILL, as a crash would.
func (r *rig) kill(name string) {
	r.t.Helper()
	if err := r.proc(name).Kill(); err != nil {
		r.t.Fatal(err)
	}
}

// restart starts name again after it died.
func (r *rig) restart(ctx context.Context, name string) {
	r.t.Helper()
	var err error
	switch name {
	case "hub":
		err = r.s.StartHub(ctx)
	case "analysis":
		err = r.s.Analysis.StartAgain(ctx)
	case "bank":
		err = r.s.Bank.StartAgain(ctx)
	}
	if err != nil {
		r.t.Fatal(err)
	}
}

// probe opens a new connection to PostgreSQL through the portal and checks
// that PostgreSQL answers (an SSLRequest, answered 'N' before any
// authentication).
func (r *rig) probe(ctx context.Context) error {
	c, err := r.s.Seed.App.NS.DialTCP(ctx, scenario.ServiceAddr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}); err != nil {
		return err
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if b[0] != 'N' {
		return fmt.Errorf("PostgreSQL answered %q to an SSLRequest", b)
	}
	return nil
}

// waitWorking probes PostgreSQL and the stream service through the portal
// every 100ms until both answer, and returns how long that took.
func (r *rig) waitWorking(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, step)
	defer cancel()
	var err error
	for {
		if err = r.probe(ctx); err == nil {
			if err = r.streams.probe(ctx, r.s.Seed.App.NS); err == nil {
				return time.Since(start), nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("new connections do not work %v after the fault: %w", time.Since(start).Round(time.Millisecond), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// pgbenchLocal runs pgbench in PostgreSQL's container, without the portal.
func (r *rig) pgbenchLocal(ctx context.Context, args ...string) (string, error) {
	argv := append([]string{"pgbench", "-h", testenv.SeedPostgresAddr, "-p", testenv.PostgresPort, "-U", "postgres"}, args...)
	out, err := r.s.Seed.Postgres.NS.RunOpts(ctx, append(argv, "postgres"), testenv.ProcOptions{Env: []string{"PGPASSWORD=" + scenario.PGPassword}})
	return string(out), err
}

// startPgbench starts pgbench in the app container, through the portal,
// with clients for d.
func (r *rig) startPgbench(clients int, d time.Duration) (*testenv.Process, error) {
	argv := []string{"pgbench", "-h", scenario.ServiceIP, "-p", scenario.ServicePort, "-U", "postgres", "-n", "-P", "1",
		"-c", strconv.Itoa(clients), "-j", "2", "-T", strconv.Itoa(int(d.Seconds())), "postgres"}
	return r.s.Seed.App.NS.Start("pgbench", argv, testenv.ProcOptions{Cgroup: r.s.Seed.App.Cgroup,
		Env: []string{"PGPASSWORD=" + scenario.PGPassword, "PGCONNECT_TIMEOUT=5"}})
}

// getJSON GETs url from the HTTP server on a unix socket into out, on a
// connection of its own that it closes: a kept-alive connection would
// count among the server's descriptors and goroutines.
func getJSON(ctx context.Context, socket, path string, out any) error {
	body, err := get(ctx, socket, path)
	if err != nil {
		return err
	}
	return json.Unmarshal(body, out)
}

func get(ctx context.Context, socket, path string) ([]byte, error) {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://x"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return body, err
}

// procStat is what the rig measures of a process.
type procStat struct {
	PID int
	FDs int
	// Pipes are the descriptors of pipes among FDs: the hub's splice(2)
	// borrows them from a pool of the Go runtime, which a GC empties, so
	// their number follows the garbage collector, not leaks.
	Pipes      int
	RSSKiB     int64
	Goroutines int // -1 without --debug-socket
}

// stat measures the process running as name.
func (r *rig) stat(ctx context.Context, name string) (procStat, error) {
	st := procStat{PID: r.proc(name).Pid(), Goroutines: -1}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", st.PID))
	if err != nil {
		return st, fmt.Errorf("count %s's descriptors: %w", name, err)
	}
	st.FDs = len(fds)
	for _, fd := range fds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", st.PID, fd.Name())); err == nil && strings.HasPrefix(l, "pipe:") {
			st.Pipes++
		}
	}
	if st.RSSKiB, err = rssKiB(st.PID); err != nil {
		return st, err
	}
	if r.debug {
		body, err := get(ctx, r.debugSocket(name), "/debug/pprof/goroutine?debug=1")
		if err != nil {
			return st, fmt.Errorf("count %s's goroutines: %w", name, err)
		}
		first, _, _ := strings.Cut(string(body), "\n")
		if _, err := fmt.Sscanf(first, "goroutine profile: total %d", &st.Goroutines); err != nil {
			return st, fmt.Errorf("count %s's goroutines: %q: %w", name, first, err)
		}
		st.Goroutines-- // the one serving the request
	}
	return st, nil
}

func rssKiB(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// settled reports whether the story is at rest: both agents linked to the
// hub, the bank's relay claimed, no connection open or warm at either
// agent, and the hub with both agents' sessions and nothing pending.
func (r *rig) settled(ctx context.Context) (bool, string) {
	for _, a := range []*scenario.Agent{r.s.Analysis, r.s.Bank} {
		var st daemon.Status
		if err := getJSON(ctx, a.Socket, "/v1/status", &st); err != nil {
			return false, fmt.Sprintf("%s: %v", a.Name, err)
		}
		if !st.Hub.Connected {
			return false, a.Name + " not linked to the hub"
		}
		for _, rl := range st.Relays {
			if !rl.Claimed {
				return false, a.Name + "'s relay not claimed"
			}
		}
		for _, in := range st.Inlets {
			if in.Counters.Active > 0 || in.Warm > 0 {
				return false, fmt.Sprintf("%s's inlet %s: %d open, %d warm", a.Name, in.Name, in.Counters.Active, in.Warm)
			}
		}
		for _, o := range st.Outlets {
			if o.Counters.Active > 0 {
				return false, fmt.Sprintf("%s's outlet %s: %d open", a.Name, o.Name, o.Counters.Active)
			}
		}
	}
	var hs hub.Stats
	if err := getJSON(ctx, filepath.Join(r.s.ProjectDir, "hub.sock"), "/v1/stats", &hs); err != nil {
		return false, fmt.Sprintf("hub: %v", err)
	}
	if hs.Sessions != 2 || hs.Pending != 0 {
		return false, fmt.Sprintf("hub: %d sessions, %d pending", hs.Sessions, hs.Pending)
	}
	return true, ""
}

// quiesce waits (past the warm channels' life) until the story is at rest
// and no process that has a baseline holds more descriptors or goroutines
// than then, and the pins are the ones the data path started with; a
// process without a baseline (it started since) gets one. It returns what
// did not come back.
//
// A baseline is the lowest of a few samples, and is lowered when a process
// is seen with fewer: at rest, an agent still renews its credential now and
// then (an exchange with the authority holds a connection and a few
// goroutines at the hub for a moment), so a sample may catch one.
func (r *rig) quiesce(ctx context.Context) []string {
	deadline := time.Now().Add(45 * time.Second)
	var why []string
	for {
		why = why[:0]
		ok, notSettled := r.settled(ctx)
		if !ok {
			why = append(why, notSettled)
		}
		stats := map[string]procStat{}
		for _, name := range processes {
			st, err := r.stat(ctx, name)
			if err != nil {
				why = append(why, err.Error())
				continue
			}
			stats[name] = st
			base, known := r.baselines[name]
			if !ok || !known || base.PID != st.PID {
				continue
			}
			if st.FDs-st.Pipes > base.FDs-base.Pipes || st.Goroutines > base.Goroutines {
				why = append(why, fmt.Sprintf("%s: %d descriptors (besides pipes) and %d goroutines, %d and %d at rest before",
					name, st.FDs-st.Pipes, st.Goroutines, base.FDs-base.Pipes, base.Goroutines))
				continue
			}
			r.baselines[name] = lowest(base, st)
		}
		pins := r.pinned()
		if r.pins != nil && !slices.Equal(pins, r.pins) {
			why = append(why, fmt.Sprintf("pins %v, %v before", pins, r.pins))
		}
		if len(why) == 0 {
			for name, st := range stats {
				if base, known := r.baselines[name]; !known || base.PID != st.PID {
					r.baselines[name] = r.restingStat(ctx, name, st)
				}
			}
			if r.pins == nil {
				r.pins = pins
			}
			return nil
		}
		if time.Now().After(deadline) {
			return why
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// restingStat is the lowest of st and two more samples of name at rest.
func (r *rig) restingStat(ctx context.Context, name string, st procStat) procStat {
	for range 2 {
		time.Sleep(300 * time.Millisecond)
		if more, err := r.stat(ctx, name); err == nil && more.PID == st.PID {
			st = lowest(st, more)
		}
	}
	return st
}

// lowest keeps the lower descriptor (besides pipes) and goroutine counts
// of a and b, samples of one process.
func lowest(a, b procStat) procStat {
	if b.FDs-b.Pipes < a.FDs-a.Pipes {
		a.FDs, a.Pipes = b.FDs, b.Pipes
	}
	a.Goroutines = min(a.Goroutines, b.Goroutines)
	return a
}

// pinned lists what the analysis agent's data path pinned.
func (r *rig) pinned() []string {
	var out []string
	filepath.WalkDir(r.s.Analysis.BPFDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(r.s.Analysis.BPFDir, p)
			out = append(out, rel)
		}
		return nil
	})
	slices.Sort(out)
	if out == nil {
		out = []string{}
	}
	return out
}
