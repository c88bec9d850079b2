package hub_test

import (
	"context"
	"io"
	"net"
	"slices"
	"sort"
	"testing"
	"time"

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
