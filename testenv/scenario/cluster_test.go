package scenario_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub/admin"
	"github.com/sluicehq/sluice/testenv"
)

// clusterEnv is three hubs on three hosts of the internet side, sharing
// the project's records in their embedded etcd members, and the seed's
// company hosts (behind NAT) where the agents run.
type clusterEnv struct {
	t     *testing.T
	seed  *testenv.Seed
	hosts []*testenv.NS
	names []string
	addrs []string // hubs' agent addresses
	dirs  []string // project directories
	procs []*testenv.Process
	peers string
	args  []string // extra `agent hub` arguments
	exe   string   // this test binary: the helper agents
	n     int      // helper processes started
}

const clusterHubPort, clusterPeerPort = "4443", "2380"

func newClusterEnv(t *testing.T, hubArgs ...string) *clusterEnv {
	env := testenv.NewT(t)
	seed, err := testenv.NewSeed(env)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := &clusterEnv{t: t, seed: seed, exe: exe, args: hubArgs}
	var peers []string
	for i, name := range []string{"a", "b", "c"} {
		addr := testenv.SeedHubHostAddr(i)
		host, err := seed.AddHubHost(name, addr)
		if err != nil {
			t.Fatal(err)
		}
		c.hosts, c.names = append(c.hosts, host), append(c.names, name)
		c.addrs = append(c.addrs, addr+":"+clusterHubPort)
		c.dirs = append(c.dirs, filepath.Join(env.Dir(), "project-"+name))
		peers = append(peers, name+"=https://"+addr+":"+clusterPeerPort)
	}
	c.peers = strings.Join(peers, ",")
	if _, err := ctl(t, "project", "init", "--dir", c.dirs[0], "--hub-address", c.addrs[0]); err != nil {
		t.Fatal(err)
	}
	for _, dir := range c.dirs[1:] { // the same project; only hub a has hub.db
		copyProject(t, c.dirs[0], dir)
	}
	c.procs = make([]*testenv.Process, 3)
	start := time.Now()
	for i := range 3 {
		c.startHub(i)
	}
	for i := range 3 {
		c.waitHub(i)
	}
	t.Logf("three hubs formed the cluster and serve in %v", time.Since(start).Round(time.Millisecond))
	return c
}

func copyProject(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"project.json", "authority.key", "authority.pem", "hub.key", "hub.pem"} {
		data, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func (c *clusterEnv) startHub(i int) {
	p, err := c.hosts[i].Start("hub-"+c.names[i], append([]string{filepath.Join(bin, "agent"), "hub", "--project", c.dirs[i],
		"--listen", c.addrs[i], "--cluster-name", c.names[i], "--cluster-peers", c.peers}, c.args...), testenv.ProcOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	c.procs[i] = p
}

func (c *clusterEnv) waitHub(i int) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.procs[i].WaitOutput(ctx, "hub listening"); err != nil {
		c.t.Fatalf("hub %s: %v\n%s", c.names[i], err, c.procs[i].OutputTail(30))
	}
}

func (c *clusterEnv) ticket() string {
	c.t.Helper()
	out, err := ctl(c.t, "ticket", "create", "--project", c.dirs[0])
	if err != nil {
		c.t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// agent starts a helper agent (cluster_helper_test.go) in the analysis
// company's host, enrolling with ticket at hub i.
func (c *clusterEnv) agent(mode string, i int, ticket string, extra ...string) *testenv.Process {
	c.t.Helper()
	c.n++
	name := fmt.Sprintf("agent-%d", c.n)
	state := filepath.Join(c.seed.Env.Dir(), name)
	p, err := c.seed.AnalysisHost.Start(name, []string{c.exe}, testenv.ProcOptions{Env: append([]string{
		helperMode + "=" + mode, helperHub + "=" + c.addrs[i], helperProject + "=" + c.dirs[0],
		helperTicket + "=" + ticket, helperState + "=" + state}, extra...)})
	if err != nil {
		c.t.Fatal(err)
	}
	return p
}

// enroll enrolls a helper agent at hub i and returns its first line.
func (c *clusterEnv) enroll(i int, ticket string) string {
	c.t.Helper()
	p := c.agent("enroll", i, ticket)
	select {
	case <-p.Exited():
	case <-time.After(60 * time.Second):
		c.t.Fatalf("enrollment at hub %s never ended:\n%s", c.names[i], p.Output())
	}
	line, _, _ := strings.Cut(p.Output(), "\n")
	return line
}

// words are the member words a watching helper printed.
type word struct {
	node    string
	gen     uint64
	revoked bool
	attrs   map[string]string
	at      time.Time
}

func words(out string) []word {
	var ws []word
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 6 || f[0] != "word" {
			continue
		}
		w := word{node: f[1], revoked: f[3] == "true"}
		w.gen, _ = strconv.ParseUint(f[2], 10, 64)
		json.Unmarshal([]byte(f[4]), &w.attrs)
		ns, _ := strconv.ParseInt(f[5], 10, 64)
		w.at = time.Unix(0, ns)
		ws = append(ws, w)
	}
	return ws
}

// status is `agentctl hub status -o json` through hub i.
func (c *clusterEnv) status(i int) *admin.ClusterStatus {
	c.t.Helper()
	out, err := ctl(c.t, "hub", "status", "--project", c.dirs[i], "-o", "json")
	if err != nil {
		c.t.Fatal(err)
	}
	var st admin.ClusterStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		c.t.Fatal(err)
	}
	return &st
}

// TestHubCluster: three hubs on the internet side form a cluster; a
// one-use ticket redeemed at once through all three wins exactly once (20
// rounds); a change made through hub a reaches an agent on hub b (the
// time is logged); a hub partitioned from the two others refuses to
// enroll (no_quorum), loses its lease (its presence vanishes for the
// majority), and a revocation made on the majority meanwhile cuts the
// revoked agent connected to it once the partition heals; with the
// leader's hub killed -9 the two others go on.
func TestHubCluster(t *testing.T) {
	testenv.RequireRoot(t)
	c := newClusterEnv(t)
	st := c.status(0)
	if len(st.Members) != 3 || st.Leader == "" || !st.Healthy {
		t.Fatalf("cluster status: %+v, want 3 members, a leader, healthy", st)
	}

	t.Run("ticket redeemed once", func(t *testing.T) {
		for round := range 20 {
			tk := c.ticket()
			lines := make([]string, 3)
			var wg sync.WaitGroup
			for i := range 3 {
				wg.Go(func() { lines[i] = c.enroll(i, tk) })
			}
			wg.Wait()
			won := 0
			for i, l := range lines {
				switch {
				case strings.HasPrefix(l, "enrolled "):
					won++
				case !strings.HasPrefix(l, "refused ticket_used "):
					t.Fatalf("round %d, hub %s: %q, want enrolled or refused ticket_used", round, c.names[i], l)
				}
			}
			if won != 1 {
				t.Fatalf("round %d: the one-use ticket enrolled %d agents (%q), want exactly 1", round, won, lines)
			}
		}
	})

	t.Run("change reaches another hub's agent", func(t *testing.T) {
		w := c.agent("watch", 1, c.ticket())
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := w.WaitOutput(ctx, "enrolled "); err != nil {
			t.Fatalf("watcher on hub b: %v\n%s", err, w.Output())
		}
		_, rest, _ := strings.Cut(w.Output(), "enrolled ")
		node := strings.Fields(rest)[0]
		var worst time.Duration
		for i := range 5 {
			val := fmt.Sprintf("r%d", i)
			start := time.Now()
			if _, err := ctl(t, "member", "set-attributes", node, "--attribute", "round="+val, "--project", c.dirs[0]); err != nil {
				t.Fatal(err)
			}
			var got *word
			for deadline := time.Now().Add(10 * time.Second); got == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				for _, x := range words(w.Output()) {
					if x.node == node && x.attrs["round"] == val {
						got = &x
					}
				}
			}
			if got == nil {
				t.Fatalf("change %d made through hub a never reached the agent on hub b:\n%s", i, w.Output())
			}
			worst = max(worst, got.at.Sub(start))
		}
		var last uint64
		for _, x := range words(w.Output()) {
			if x.node == node && x.gen <= last {
				t.Fatalf("words out of order or twice on the agent: generation %d after %d\n%s", x.gen, last, w.Output())
			}
			if x.node == node {
				last = x.gen
			}
		}
		t.Logf("a change made through hub a reached the agent on hub b in at most %v (5 changes, agentctl included)", worst.Round(time.Millisecond))
		w.Stop()
	})

	t.Run("partitioned hub", func(t *testing.T) {
		v := c.agent("watch", 2, c.ticket()) // on hub c
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := v.WaitOutput(ctx, "enrolled "); err != nil {
			t.Fatalf("agent on hub c: %v\n%s", err, v.Output())
		}
		_, rest, _ := strings.Cut(v.Output(), "enrolled ")
		node := strings.Fields(rest)[0]
		cut, err := c.hosts[2].Isolate(testenv.SeedHubHostAddr(0), testenv.SeedHubHostAddr(1))
		if err != nil {
			t.Fatal(err)
		}
		defer cut.Close()
		if l := c.enroll(2, c.ticket()); !strings.HasPrefix(l, "refused no_quorum ") {
			t.Fatalf("enrollment at the partitioned hub: %q, want refused no_quorum", l)
		}
		if _, err := ctl(t, "member", "revoke", node, "--project", c.dirs[0]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // a hub that passed it on would have by now
		for _, x := range words(v.Output()) {
			if x.node == node && x.revoked {
				t.Fatalf("the partitioned hub passed on a revocation it cannot have heard:\n%s", v.Output())
			}
		}
		// Hub c cannot keep its lease alive: its presence and claims
		// vanish for the majority.
		present := func(i int, name string) bool {
			for _, h := range c.status(i).Hubs {
				if h.Name == name {
					return true
				}
			}
			return false
		}
		for deadline := time.Now().Add(30 * time.Second); present(0, "c"); time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the partitioned hub c is still present for the majority 30 s into the partition")
			}
		}
		if err := cut.Close(); err != nil { // heal
			t.Fatal(err)
		}
		healed := time.Now()
		if err := v.WaitOutput(ctx, "ended "); err != nil {
			t.Fatalf("revoked agent on the healed hub: %v\n%s", err, v.Output())
		}
		revoked := false
		for _, x := range words(v.Output()) {
			revoked = revoked || (x.node == node && x.revoked)
		}
		if !revoked || !strings.Contains(v.Output(), "revoked") {
			t.Fatalf("agent on the healed hub ended without hearing of its revocation:\n%s", v.Output())
		}
		t.Logf("the revocation made during the partition cut the agent on the healed hub %v after the heal", time.Since(healed).Round(time.Millisecond))
		for deadline := time.Now().Add(30 * time.Second); !present(0, "c"); time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the healed hub c did not publish its presence again under a new lease")
			}
		}
		t.Logf("the healed hub holds a new lease %v after the heal", time.Since(healed).Round(time.Millisecond))
	})

	t.Run("leader killed", func(t *testing.T) {
		st := c.status(0)
		lead := -1
		for i, n := range c.names {
			if n == st.Leader {
				lead = i
			}
		}
		if lead < 0 {
			t.Fatalf("no leader in %+v", st)
		}
		if err := c.procs[lead].Kill(); err != nil {
			t.Fatal(err)
		}
		other := (lead + 1) % 3
		start := time.Now()
		var l string
		for time.Since(start) < 30*time.Second {
			if l = c.enroll(other, c.ticket()); strings.HasPrefix(l, "enrolled ") {
				break
			}
		}
		if !strings.HasPrefix(l, "enrolled ") {
			t.Fatalf("enrollment at hub %s after hub %s (the leader) was killed: %q", c.names[other], c.names[lead], l)
		}
		t.Logf("hub %s (the etcd leader) killed -9: hub %s enrolled again %v later", c.names[lead], c.names[other], time.Since(start).Round(time.Millisecond))
		if st := c.status(other); !st.Healthy || st.Leader == "" || st.Leader == c.names[lead] {
			t.Fatalf("status after the leader's hub died: %+v", st)
		}
		// Its lease (5 s, extended once by the new leader) lapses: its
		// presence and relay claims vanish for the others.
		for {
			gone := true
			for _, h := range c.status(other).Hubs {
				gone = gone && h.Name != c.names[lead]
			}
			if gone {
				break
			}
			if time.Since(start) > 30*time.Second {
				t.Fatalf("the killed hub %s is still present in the cluster 30 s later", c.names[lead])
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("the killed hub's lease lapsed (presence and claims gone) %v after the kill", time.Since(start).Round(time.Millisecond))
	})
}
