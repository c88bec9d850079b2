package scenario_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/api/apitype"
	"github.com/sluicehq/sluice/testenv"
	"github.com/sluicehq/sluice/testenv/scenario"
)

// The portal of TestHubClusterFailover: an explicit inlet on the analysis
// host, open to its containers (the app dials it on the bridge's address),
// via relay "postgres" to the bank agents' outlets to PostgreSQL.
const (
	failInletPort = "15432"
	failInletAddr = testenv.SeedAnalysisGW + ":" + failInletPort
	failRelay     = "postgres"
	// hubDrain is the hubs' --shutdown-timeout: how long a hub stopped
	// with SIGTERM relays the sessions it has before it resets them.
	hubDrain = time.Second
)

// failAgent is an agent of TestHubClusterFailover: `agent run` without the
// data path, enrolled with a ticket that lists the three hubs, and with no
// direct paths: the test is about the sessions the hubs relay.
type failAgent struct {
	name   string
	socket string
	proc   *testenv.Process
}

func (c *clusterEnv) startFailAgent(ns *testenv.NS, name, ticket string) *failAgent {
	c.t.Helper()
	dir := c.seed.Env.Dir()
	a := &failAgent{name: name, socket: filepath.Join(dir, name+".sock")}
	tf := filepath.Join(dir, name+".ticket")
	if err := os.WriteFile(tf, []byte(ticket+"\n"), 0o600); err != nil {
		c.t.Fatal(err)
	}
	p, err := ns.Start(name+"-agent", []string{filepath.Join(bin, "agent"), "run", "--state-dir", filepath.Join(dir, name+"-state"),
		"--api", a.socket, "--datapath", "off", "--direct-paths", "off", "--ticket", "@" + tf}, testenv.ProcOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	a.proc = p
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.WaitOutput(ctx, "agent ready"); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { p.Stop() })
	return a
}

func (a *failAgent) ctl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := ctl(t, append([]string{"--agent", a.socket}, args...)...)
	if err != nil {
		t.Fatalf("%s: agentctl %s: %v", a.name, strings.Join(args, " "), err)
	}
	return out
}

func (a *failAgent) status(t *testing.T) apitype.Status {
	t.Helper()
	var st apitype.Status
	if err := json.Unmarshal([]byte(a.ctl(t, "status", "-o", "json")), &st); err != nil {
		t.Fatalf("%s: status: %v", a.name, err)
	}
	return st
}

// linked reports whether the agent has a live link to every one of hubs
// and holds the relay on each: the control link's claim, and each outlet
// link's.
func (a *failAgent) linked(t *testing.T, hubs []string) bool {
	st := a.status(t)
	held := map[string]bool{}
	for _, l := range st.Hub.Hubs {
		switch {
		case !l.Connected:
		case l.Role == "outlet" && slices.Contains(l.Relays, failRelay):
			held[l.Addr] = true
		case l.Role == "control":
			for _, r := range st.Relays {
				held[l.Addr] = held[l.Addr] || r.Name == failRelay && r.Claimed
			}
		}
	}
	for _, h := range hubs {
		if !held[h] {
			return false
		}
	}
	return true
}

// probe is one new connection through the portal: PostgreSQL's answer to
// an SSLRequest ('S' or 'N') came back from the bank's side.
type probe struct {
	start, end time.Time
	err        error
}

func probeOnce(ns *testenv.NS) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := ns.DialTCP(ctx, failInletAddr, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(sslRequest); err != nil {
		return fmt.Errorf("send SSLRequest: %w", err)
	}
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return fmt.Errorf("read PostgreSQL's answer: %w", err)
	}
	if b[0] != 'S' && b[0] != 'N' {
		return fmt.Errorf("PostgreSQL answered %q to an SSLRequest, want S or N", b[0])
	}
	return nil
}

// connectLoop makes new connections through the portal one after the
// other, every gap, until stop; it keeps every attempt.
type connectLoop struct {
	mu     sync.Mutex
	probes []probe
	stop   chan struct{}
	done   chan struct{}
}

func startConnectLoop(ns *testenv.NS, gap time.Duration) *connectLoop {
	l := &connectLoop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			p := probe{start: time.Now()}
			p.err = probeOnce(ns)
			p.end = time.Now()
			l.mu.Lock()
			l.probes = append(l.probes, p)
			l.mu.Unlock()
			select {
			case <-l.stop:
				return
			case <-time.After(gap):
			}
		}
	}()
	return l
}

func (l *connectLoop) end() []probe {
	close(l.stop)
	<-l.done
	return l.probes
}

func (l *connectLoop) since(t time.Time) []probe {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []probe
	for _, p := range l.probes {
		if !p.start.Before(t) {
			out = append(out, p)
		}
	}
	return out
}

// pgbench is pgbench in the app container through the portal, in one
// thread (-j 1), so that its error lines do not interleave.
func (c *clusterEnv) pgbench(clients int, d time.Duration) *testenv.Process {
	c.t.Helper()
	argv := []string{"pgbench", "-h", testenv.SeedAnalysisGW, "-p", failInletPort, "-U", "postgres", "-n", "-P", "1",
		"-c", strconv.Itoa(clients), "-j", "1", "-T", strconv.Itoa(int(d.Seconds())), "postgres"}
	p, err := c.seed.App.NS.Start("pgbench", argv, testenv.ProcOptions{Cgroup: c.seed.App.Cgroup,
		Env: []string{"PGPASSWORD=" + scenario.PGPassword, "PGCONNECT_TIMEOUT=5"}})
	if err != nil {
		c.t.Fatal(err)
	}
	return p
}

var (
	pgbenchProcessed = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
	pgbenchAborted   = regexp.MustCompile(`client \d+ aborted`)
	pgbenchNumbers   = regexp.MustCompile(`[0-9]+`)
)

// pgbenchVerdict waits (up to d) for pgbench to end and returns the
// transactions it processed and its distinct error lines (numbers
// blanked). It fails the test if pgbench hangs, or prints an error that
// is not a connection cut (reset, or closed by the server).
func (c *clusterEnv) pgbenchVerdict(p *testenv.Process, d time.Duration) (tx, aborted int, errs []string) {
	c.t.Helper()
	select {
	case <-p.Exited():
	case <-time.After(d):
		c.t.Fatalf("pgbench hangs %v past its end:\n%s", d, p.OutputTail(3000))
	}
	out := p.Output()
	if m := pgbenchProcessed.FindStringSubmatch(out); m != nil {
		tx, _ = strconv.Atoi(m[1])
	}
	aborted = len(pgbenchAborted.FindAllString(out, -1))
	seen := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if !strings.Contains(line, "error") && !strings.Contains(line, "server closed") && !strings.Contains(line, "reset") {
			continue
		}
		if strings.Contains(line, "number of failed transactions") {
			continue
		}
		l := pgbenchNumbers.ReplaceAllString(line, "N")
		if !seen[l] {
			seen[l] = true
			errs = append(errs, l)
		}
		if !strings.Contains(line, "server closed the connection unexpectedly") && !strings.Contains(line, "Connection reset by peer") &&
			!strings.Contains(line, "could not receive data from server") && !strings.Contains(line, "perhaps the backend died while processing") &&
			!strings.Contains(line, "Run was aborted; the above results are incomplete") {
			c.t.Errorf("pgbench printed an error that is not a connection cut: %q\n%s", line, p.OutputTail(3000))
		}
	}
	return tx, aborted, errs
}

// hubsRSS is each hub process's VmRSS.
func (c *clusterEnv) hubsRSS() string {
	var out []string
	for i, p := range c.procs {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
		rss := "?"
		for line := range strings.Lines(string(data)) {
			if f := strings.Fields(line); err == nil && len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.Atoi(f[1])
				rss = fmt.Sprintf("%.1f MB", float64(kb)*1024/1e6)
			}
		}
		out = append(out, c.names[i]+" "+rss)
	}
	return strings.Join(out, ", ")
}

// hubOfAgent is the index of the hub of the agent's control link.
func (c *clusterEnv) hubOfAgent(t *testing.T, a *failAgent) int {
	t.Helper()
	st := a.status(t).Hub
	if !st.Connected {
		t.Fatalf("%s has no control link: %+v", a.name, st)
	}
	i := slices.Index(c.addrs, st.Hub)
	if i < 0 {
		t.Fatalf("%s's control link is on %s, not one of the cluster's hubs %v", a.name, st.Hub, c.addrs)
	}
	return i
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
	}
}

// TestHubClusterFailover: three hubs on three hosts of the internet side
// in one etcd cluster; the bank's agent (the outlet to PostgreSQL, linked
// to every hub) and the analysis agent (an inlet the app container dials)
// enrolled with tickets that list all three; pgbench runs through the
// portal throughout, beside a steady loop of new connections. Faults:
//
//   - kill -9 of the hub the inlet's agent uses (its etcd member a
//     follower): new connections work again within 3 s, and pgbench's
//     connections on it are cut (reset, or closed by the server), never
//     hung or answered wrongly;
//   - a rolling restart of the three hubs (SIGTERM, back and serving,
//     next): no new connection fails but those in flight at a stop;
//   - two outlet replicas, one killed -9: every new connection from 1 s
//     after the kill on reaches the other.
//
// The figures are logged.
func TestHubClusterFailover(t *testing.T) {
	testenv.RequireRoot(t)
	began := time.Now()
	c := newClusterEnv(t, "--shutdown-timeout", hubDrain.String())
	if _, err := c.seed.StartPostgres(scenario.PGPassword); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := c.seed.Postgres.NS.RunOpts(ctx, []string{"pgbench", "-h", testenv.SeedPostgresAddr, "-p", testenv.PostgresPort,
		"-U", "postgres", "-i", "-s", "1", "-q", "postgres"}, testenv.ProcOptions{Env: []string{"PGPASSWORD=" + scenario.PGPassword}}); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	// The tickets list a hub whose member is a follower first: the agents
	// enroll there, and the hub killed -9 below is one whose death costs
	// no etcd election. The leader's death adds one before another hub
	// can read the members for the inlet's hello (etcd's election timeout,
	// 1 s, randomized up to 2 s: TestHubCluster's "leader killed"
	// measures it); the role of the hub killed is logged.
	leader := c.status(0).Leader
	first := slices.IndexFunc(c.names, func(n string) bool { return n != leader })
	hubFlags := []string{"--hub", c.addrs[first]}
	for i, a := range c.addrs {
		if i != first {
			hubFlags = append(hubFlags, "--hub", a)
		}
	}
	ticket := func(flags ...string) string {
		out, err := ctl(t, append(append([]string{"ticket", "create", "--project", c.dirs[0]}, flags...), hubFlags...)...)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	bankTicket := ticket("--attribute", "postgres-outlet=true", "--relay", failRelay, "--usage-count", "2")
	bank := c.startFailAgent(c.seed.BankHost, "bank", bankTicket)
	bank.ctl(t, "relay", "create", failRelay)
	bank.ctl(t, "tcp-outlet", "create", "--name", "postgres", "--to", "postgres:"+testenv.PostgresPort, "--allow", "postgres-inlet")
	analysis := c.startFailAgent(c.seed.AnalysisHost, "analysis", ticket("--attribute", "postgres-inlet=true"))
	analysis.ctl(t, "tcp-inlet", "create", "--name", "postgres", "--from", "0.0.0.0:"+failInletPort, "--via", failRelay,
		"--outlet", "postgres", "--allow", "postgres-outlet")
	waitUntil(t, 20*time.Second, "the bank's agent holds the relay on every hub", func() bool { return bank.linked(t, c.addrs) })
	waitUntil(t, 20*time.Second, "a first connection through the portal", func() bool { return probeOnce(c.seed.App.NS) == nil })
	t.Logf("set up (cluster, PostgreSQL, agents, portal) in %v; resident memory of each hub (with its embedded etcd member of three, two agents connected): %s",
		time.Since(began).Round(time.Millisecond), c.hubsRSS())

	loop := startConnectLoop(c.seed.App.NS, 20*time.Millisecond)
	defer loop.end()

	t.Run("hub killed", func(t *testing.T) {
		load := c.pgbench(4, 6*time.Second)
		time.Sleep(2 * time.Second) // pgbench under way
		dead := c.hubOfAgent(t, analysis)
		role := "a follower"
		if c.status((dead+1)%3).Leader == c.names[dead] {
			role = "the etcd leader"
		}
		if err := c.procs[dead].Kill(); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		var back time.Duration
		for {
			if err := probeOnce(c.seed.App.NS); err == nil {
				back = time.Since(killed)
				break
			}
			if time.Since(killed) > 3*time.Second {
				t.Fatalf("no new connection through the portal within 3 s of hub %s's kill -9", c.names[dead])
			}
			time.Sleep(10 * time.Millisecond)
		}
		tx, aborted, errs := c.pgbenchVerdict(load, 15*time.Second)
		if aborted == 0 {
			t.Errorf("no pgbench client was cut when its sessions' hub died:\n%s", load.OutputTail(3000))
		}
		if i := c.hubOfAgent(t, analysis); i == dead {
			t.Errorf("the inlet's agent is on the killed hub %s", c.names[dead])
		}
		t.Logf("hub %s (the inlet's, %s) killed -9: new connections worked again %v later; pgbench (4 clients, 6 s): %d tx, %d clients cut; it printed: %q",
			c.names[dead], role, back.Round(time.Millisecond), tx, aborted, errs)
		c.startHub(dead)
		c.waitHub(dead)
		waitUntil(t, 20*time.Second, "the bank's agent holds the relay on the restarted hub", func() bool { return bank.linked(t, c.addrs) })
	})

	t.Run("rolling restart", func(t *testing.T) {
		from := time.Now()
		load := c.pgbench(2, 15*time.Second)
		var stops [][2]time.Time // each hub's stop: SIGTERM sent, process gone
		var took []time.Duration
		for i := range c.procs {
			stop := time.Now()
			if err := c.procs[i].Stop(); err != nil {
				t.Fatal(err)
			}
			stops = append(stops, [2]time.Time{stop, time.Now()})
			c.startHub(i)
			c.waitHub(i)
			waitUntil(t, 20*time.Second, "the bank's agent holds the relay on every hub", func() bool { return bank.linked(t, c.addrs) })
			took = append(took, time.Since(stop))
		}
		time.Sleep(500 * time.Millisecond)
		probes := loop.since(from)
		inFlight, lost := 0, []string{}
		for _, p := range probes {
			if p.err == nil {
				continue
			}
			during := false
			for _, s := range stops {
				during = during || (p.start.Before(s[1]) && p.end.After(s[0]))
			}
			if during {
				inFlight++
				continue
			}
			lost = append(lost, fmt.Sprintf("%s (+%v): %v", p.start.Format("15:04:05.000"), p.start.Sub(from).Round(time.Millisecond), p.err))
		}
		tx, aborted, errs := c.pgbenchVerdict(load, 30*time.Second)
		t.Logf("rolling restart (SIGTERM, back, relay held on every hub, next; %v per hub): %d new connections, %d failed while a hub was stopping, %d lost otherwise; pgbench (2 clients): %d tx, %d clients cut; it printed: %q",
			took, len(probes), inFlight, len(lost), tx, aborted, errs)
		if len(lost) > 0 {
			t.Errorf("new connections lost outside the hubs' stops:\n%s", strings.Join(lost, "\n"))
		}
		if len(probes) < 20 {
			t.Errorf("only %d new connections during the rolling restart: the loop did not run", len(probes))
		}
	})

	t.Run("outlet replica killed", func(t *testing.T) {
		bank2 := c.startFailAgent(c.seed.BankHost, "bank2", bankTicket)
		bank2.ctl(t, "relay", "create", failRelay)
		bank2.ctl(t, "tcp-outlet", "create", "--name", "postgres", "--to", "postgres:"+testenv.PostgresPort, "--allow", "postgres-inlet")
		waitUntil(t, 20*time.Second, "the second replica holds the relay on every hub", func() bool { return bank2.linked(t, c.addrs) })
		load := c.pgbench(2, 4*time.Second)
		time.Sleep(time.Second)
		if err := bank.proc.Kill(); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		time.Sleep(3 * time.Second)
		var lastFail time.Duration = -1
		n, fails := 0, []string{}
		for _, p := range loop.since(killed) {
			n++
			if p.err != nil {
				lastFail = max(lastFail, p.start.Sub(killed))
				fails = append(fails, fmt.Sprintf("+%v: %v", p.start.Sub(killed).Round(time.Millisecond), p.err))
			}
		}
		if lastFail >= time.Second {
			t.Errorf("a new connection started %v after one replica's kill -9 failed, want none from 1 s on; failures:\n%s\nanalysis agent:\n%s\nsecond replica:\n%s",
				lastFail.Round(time.Millisecond), strings.Join(fails[max(0, len(fails)-3):], "\n"), analysis.proc.OutputTail(4000), bank2.proc.OutputTail(4000))
		}
		if n < 20 {
			t.Errorf("only %d new connections in the 3 s after the replica's kill", n)
		}
		// The connection in flight at the kill ends at once, either way:
		// a session announced to the dead replica fails at the hub, and the
		// inlet asks again (it hung for the hub's SessionTimeout before).
		for _, p := range loop.since(killed.Add(-5 * time.Second)) {
			if p.start.Before(killed) && p.end.Sub(killed) > 2*time.Second {
				t.Errorf("the connection in flight at the replica's kill ended %v after it (%v)", p.end.Sub(killed).Round(time.Millisecond), p.err)
			}
		}
		tx, aborted, errs := c.pgbenchVerdict(load, 15*time.Second)
		figure := "none failed"
		if lastFail >= 0 {
			figure = fmt.Sprintf("the last that failed started %v after the kill", lastFail.Round(time.Millisecond))
		}
		t.Logf("outlet replica killed -9: %d new connections in the next 3 s, %s; pgbench (2 clients): %d tx, %d clients cut; it printed: %q",
			n, figure, tx, aborted, errs)
	})
	t.Logf("whole test: %v", time.Since(began).Round(time.Millisecond))
}
