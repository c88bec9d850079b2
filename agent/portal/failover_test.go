package portal_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/portal"
	"github.com/sluicehq/sluice/agent/relay"
)

// clusterNode is newNode for an agent that knows every hub of hubs (the
// first serving its project's authority) and enrolls on the first.
func clusterNode(t testing.TB, hubs []*testhub.Hub, opts portal.Options, attrs map[string]string, relays ...string) *node {
	t.Helper()
	var addrs []string
	for _, h := range hubs {
		addrs = append(addrs, h.Addr)
	}
	h := hubs[0]
	a, err := h.Connect(t, testhub.AgentOptions{Hubs: addrs,
		Ticket: h.Ticket(t, authority.TicketOptions{Attributes: attrs, Relays: relays, Hubs: addrs})})
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	opts.Hub, opts.Keys, opts.Verifier = a.Client, a.Keys, a.Verifier
	opts.MemberStateCurrent = func() bool { return !a.Client.Status().Stale }
	core, logs := observer.New(zapcore.DebugLevel)
	opts.Logger = zap.New(core)
	m := portal.New(opts)
	a.OnIncoming(func(in relay.Incoming) { m.HandleIncoming(in.Token, in.From) })
	a.OnGoingAway(m.HubGoingAway)
	t.Cleanup(func() { m.Close() })
	for _, r := range relays {
		if err := a.Client.Claim(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	return &node{a, m, logs}
}

// startCluster starts a hub and n-1 peers of its project.
func startCluster(t *testing.T, n int) []*testhub.Hub {
	hubs := []*testhub.Hub{testhub.Start(t, testhub.Options{})}
	for range n - 1 {
		hubs = append(hubs, hubs[0].StartPeer(t, nil))
	}
	return hubs
}

// claimedEverywhere waits until every hub has relay name claimed.
func claimedEverywhere(t *testing.T, hubs []*testhub.Hub, name string) {
	t.Helper()
	for _, h := range hubs {
		if !testhub.WaitFor(wait, func() bool { return slices.Contains(h.Relay().Stats().Relays, name) }) {
			t.Fatalf("relay %s not claimed on hub %s", name, h.Addr)
		}
	}
}

// appRoundTrip is an app's connection to addr: it sends msg, half-closes
// and reads the whole answer.
func appRoundTrip(addr, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	got, err := roundTrip(c.(*net.TCPConn), []byte(msg))
	return string(got), err
}

// TestRollingRestartLosesNoConnection: hubs restarted one at a time, each
// gracefully (it tells its agents it is going away, then stops), lose none
// of the connections apps open meanwhile through an inlet: its agent moves
// to another hub, and a session the going hub lost before it started is
// asked for again there.
func TestRollingRestartLosesNoConnection(t *testing.T) {
	for _, warm := range []bool{false, true} {
		name := "cold"
		if warm {
			name = "warm"
		}
		t.Run(name, func(t *testing.T) { rollingRestart(t, warm) })
	}
}

func rollingRestart(t *testing.T, warm bool) {
	hubs := startCluster(t, 3)
	tg := newTarget(t, bytes.ToUpper)
	go func() { // the target's record of each connection's end, not needed here
		for {
			select {
			case <-tg.ended:
			case <-t.Context().Done():
				return
			}
		}
	}()
	opts := portal.Options{WarmIdle: -1}
	if warm {
		opts.WarmIdle = 0 // the default
	}
	out := clusterNode(t, hubs, opts, map[string]string{"web-outlet": "true"}, "web")
	out.outlet(t, portal.OutletSpec{Name: "web", To: tg.addr, Allow: "web-inlet"})
	in := clusterNode(t, hubs, opts, map[string]string{"web-inlet": "true"})
	addr := in.inlet(t, portal.InletSpec{Name: "web", Via: "web", Allow: "web-outlet"})
	claimedEverywhere(t, hubs, "web")

	// Apps connect, one after another on each of 4 goroutines, all along.
	var (
		stop           atomic.Bool
		wg             sync.WaitGroup
		mu             sync.Mutex
		failed         []error
		okConns, total atomic.Int64
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				total.Add(1)
				got, err := appRoundTrip(addr, "hello")
				if err == nil && got != "HELLO" {
					err = fmt.Errorf("read %q, want HELLO", got)
				}
				if err != nil {
					mu.Lock()
					failed = append(failed, err)
					mu.Unlock()
					continue
				}
				okConns.Add(1)
			}
		}()
	}
	for round := range 2 {
		for _, h := range hubs {
			before := okConns.Load()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := h.Relay().Shutdown(ctx); err != nil {
				t.Logf("round %d: hub %s: shutdown ended its last sessions: %v", round, h.Addr, err)
			}
			cancel()
			h.Restart(t)
			claimedEverywhere(t, hubs, "web")
			if !testhub.WaitFor(wait, func() bool { return okConns.Load() > before+10 }) {
				t.Fatalf("round %d: connections stopped working after hub %s restarted", round, h.Addr)
			}
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d app connections, %d failed, during 6 graceful hub restarts", total.Load(), len(failed))
	for _, err := range failed {
		t.Errorf("an app connection failed during a rolling restart: %v", err)
	}
	if len(failed) > 0 {
		t.Logf("the inlet's agent logged:\n%s", in.logText())
	}
}
