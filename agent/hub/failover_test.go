package hub_test

import (
	"context"
	"io"
	"net"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/pipe"
)

// cluster is a hub and its peers: hubs of one project sharing its
// authority, on ports of 127.0.0.1.
type cluster struct {
	hubs  []*testhub.Hub
	addrs []string
}

func startCluster(t *testing.T, n int) *cluster {
	h := testhub.Start(t, testhub.Options{})
	c := &cluster{hubs: []*testhub.Hub{h}, addrs: []string{h.Addr}}
	for range n - 1 {
		p := h.StartPeer(t, nil)
		c.hubs, c.addrs = append(c.hubs, p), append(c.addrs, p.Addr)
	}
	return c
}

// enroll connects a new agent that knows every hub of the cluster, with a
// ticket for relays.
func (c *cluster) enroll(t *testing.T, relays ...string) *testhub.Agent {
	t.Helper()
	h := c.hubs[0]
	a, err := h.Connect(t, testhub.AgentOptions{Hubs: c.addrs,
		Ticket: h.Ticket(t, authority.TicketOptions{Relays: relays, Hubs: c.addrs})})
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	return a
}

// hubOf is the hub the agent's control link is on.
func (c *cluster) hubOf(t *testing.T, a *testhub.Agent) *testhub.Hub {
	t.Helper()
	var addr string
	if !testhub.WaitFor(wait, func() bool {
		st := a.Client.Status()
		addr = st.Hub
		return st.Connected
	}) {
		t.Fatal("the agent has no control link")
	}
	return c.hubs[slices.Index(c.addrs, addr)]
}

// waitClaimed waits until name is claimed on every hub that serves.
func (c *cluster) waitClaimed(t *testing.T, name string, except *testhub.Hub) {
	t.Helper()
	for _, h := range c.hubs {
		if h == except {
			continue
		}
		if !testhub.WaitFor(wait, func() bool { return slices.Contains(relaysOf(h), name) }) {
			t.Fatalf("relay %s not claimed on hub %s", name, h.Addr)
		}
	}
}

// session opens a data session from in to the relay and returns both ends
// once bytes crossed it, or the error that stopped it.
func tryRelaySession(in *testhub.Agent, sessions <-chan incoming, name string, d time.Duration) (inlet, outlet *net.TCPConn, err error) {
	for drained := false; !drained; { // sessions of attempts given up on
		select {
		case s := <-sessions:
			if s.conn != nil {
				s.conn.Close()
			}
		default:
			drained = true
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	tok, _, err := in.Client.Dial(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	conn, err := in.Client.OpenData(ctx, tok)
	if err != nil {
		return nil, nil, err
	}
	select {
	case s := <-sessions:
		if s.err != nil {
			conn.Close()
			return nil, nil, s.err
		}
		for _, c := range []*net.TCPConn{conn, s.conn} {
			c.SetDeadline(time.Now().Add(wait))
		}
		return conn, s.conn, nil
	case <-ctx.Done():
		conn.Close()
		return nil, nil, ctx.Err()
	}
}

// TestFailoverToAnotherHub: when the hub an inlet's agent uses dies, the
// sessions it relayed are reset at both ends, and new connections work
// again through another hub of the project within 3s (the median over the
// rounds is logged). The outlet's agent has a link to every hub, so any
// hub the inlet moves to has the relay.
func TestFailoverToAnotherHub(t *testing.T) {
	c := startCluster(t, 3)
	out, in := c.enroll(t, "svc"), c.enroll(t)
	sessions := answer(out)
	claim(t, out, "svc")
	c.waitClaimed(t, "svc", nil)
	// The outlet's agent shows its links: the control link and one to
	// each other hub, holding the relay there; the inlet's, one link.
	if !testhub.WaitFor(wait, func() bool {
		links := out.Client.Status().Hubs
		roles := map[string]int{}
		for _, l := range links {
			if l.Connected && (l.Role == "control" || slices.Equal(l.Relays, []string{"svc"})) {
				roles[l.Role]++
			}
		}
		return len(links) == 3 && roles["control"] == 1 && roles["outlet"] == 2
	}) {
		t.Errorf("the outlet's agent shows links %+v, want a control link and two outlet links holding svc", out.Client.Status().Hubs)
	}
	if links := in.Client.Status().Hubs; len(links) != 3 || links[0].Role != "control" || links[1].Role != "standby" || links[2].Role != "standby" {
		t.Errorf("the inlet's agent shows links %+v, want one control link and two hubs on standby", links)
	}

	const rounds = 5
	var took []time.Duration
	for round := range rounds {
		inlet, outlet, err := tryRelaySession(in, sessions, "svc", wait)
		if err != nil {
			t.Fatalf("round %d: session before the hub dies: %v", round, err)
		}
		exchange(t, inlet, outlet, "before")
		dead := c.hubOf(t, in)
		if err := dead.Stop(); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		for name, conn := range map[string]*net.TCPConn{"inlet": inlet, "outlet": outlet} {
			conn.SetReadDeadline(time.Now().Add(wait))
			if _, err := io.ReadAll(conn); !pipe.IsReset(err) {
				t.Errorf("round %d: the %s's data connection ended with %v when its hub died, want a reset", round, name, err)
			}
			conn.Close()
		}
		for {
			inlet, outlet, err := tryRelaySession(in, sessions, "svc", time.Second)
			if err == nil {
				took = append(took, time.Since(killed))
				exchange(t, inlet, outlet, "after")
				inlet.Close()
				outlet.Close()
				break
			}
			if time.Since(killed) > 3*time.Second {
				t.Fatalf("round %d: no new session within 3s of the hub's death: %v", round, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if now := c.hubOf(t, in); now == dead {
			t.Fatalf("round %d: the inlet's agent is on the dead hub", round)
		}
		dead.Restart(t)
		c.waitClaimed(t, "svc", nil)
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	t.Logf("new connections after the hub's death: median %v, max %v over %d rounds", took[len(took)/2], took[len(took)-1], rounds)
}

// blackHole is a listener that accepts connections, records when, and
// never answers: each agent that dials it makes one attempt and waits.
type blackHole struct {
	addr  string
	mu    sync.Mutex
	times []time.Time
}

func newBlackHole(t *testing.T) *blackHole {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackHole{addr: ln.Addr().String()}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.times = append(b.times, time.Now())
			conns = append(conns, c)
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return b
}

func (b *blackHole) arrivals() []time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.times)
}

// TestFailoverSpreadsAgents: the agents of a hub that dies do not all come
// to the other hubs at once: each waits a random time before it moves
// (full jitter, client_end.go), and they spread over the hubs left. The
// other hubs are black holes that take each agent's first attempt and hold
// it, so each agent makes one attempt, logged when it starts. Of 40
// agents, no 5ms window holds more than a quarter of the attempts
// (uniform over 250ms it holds less than 1 on average), and each hub left gets
// some. Without the jitter, 14 to 22 of them came within 5ms.
func TestFailoverSpreadsAgents(t *testing.T) {
	const agents = 40
	h := testhub.Start(t, testhub.Options{})
	holes := []*blackHole{newBlackHole(t), newBlackHole(t)}
	hubs := []string{h.Addr, holes[0].addr, holes[1].addr}
	ticket := h.Ticket(t, authority.TicketOptions{Usage: agents, Hubs: hubs})
	core, logs := observer.New(zapcore.DebugLevel)
	for range agents {
		if _, err := h.Connect(t, testhub.AgentOptions{Hubs: hubs, Ticket: ticket, Logger: zap.New(core)}); err != nil {
			t.Fatal(err)
		}
	}
	killed := time.Now()
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}
	attempts := func() []observer.LoggedEntry { return logs.FilterMessage("connecting to hub").All() }
	if !testhub.WaitFor(wait, func() bool { return len(attempts()) >= agents }) {
		t.Fatalf("%d attempts to reach another hub, want one from each of the %d agents", len(attempts()), agents)
	}
	var arrivals []time.Duration
	for _, e := range attempts() {
		arrivals = append(arrivals, e.Time.Sub(killed))
	}
	for i, b := range holes {
		if !testhub.WaitFor(wait, func() bool { return len(b.arrivals()) > 0 }) {
			t.Errorf("hub %d of the 2 left got none of the %d agents: not spread", i+1, agents)
		}
	}
	slices.Sort(arrivals)
	busiest := 0
	for i := range arrivals {
		j := sort.Search(len(arrivals), func(j int) bool { return arrivals[j] >= arrivals[i]+5*time.Millisecond })
		busiest = max(busiest, j-i)
	}
	t.Logf("%d agents' first attempts after the hub's death: from %v to %v, median %v; at most %d within 5ms",
		len(arrivals), arrivals[0], arrivals[len(arrivals)-1], arrivals[len(arrivals)/2], busiest)
	limit := agents / 4
	if testhub.Slowdown > 1 {
		limit = agents / 2 // the race detector's stalls bunch timers that should fire apart
	}
	if busiest > limit {
		t.Errorf("%d of %d agents came within 5ms: a thundering herd", busiest, agents)
	}
}
