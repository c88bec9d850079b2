package scenario_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/testenv"
	"github.com/sluicehq/sluice/testenv/scenario"
)

// sslRequest is PostgreSQL's SSLRequest message; the server answers one
// byte ('S' or 'N'), which proves a round trip through the portal.
var sslRequest = []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}

// openSessionAt dials addr from ns and does one round trip with PostgreSQL
// through the portal behind it.
func openSessionAt(ctx context.Context, ns *testenv.NS, addr string) (net.Conn, error) {
	c, err := ns.DialTCP(ctx, addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	if _, err = c.Write(sslRequest); err == nil {
		_, err = io.ReadFull(c, b[:])
	}
	if err != nil || (b[0] != 'S' && b[0] != 'N') {
		c.Close()
		return nil, errors.Join(errors.New("no answer from PostgreSQL through the portal"), err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// memberTarget is one way the app reaches PostgreSQL.
type memberTarget struct {
	name string
	addr string
	// kernel: refusals of this inlet come from the kernel (connection
	// refused at once) rather than from the agent (accepted, then reset).
	kernel bool
}

// TestMemberChanges: the project's current word on a node decides every
// connection. When the hub takes the attribute a policy needs away from
// the inlet's or the outlet's node, every new connection through either
// inlet kind is reset within a second and keeps being reset (no warm
// channel, no credential from before the change lets one through) and the
// established ones are closed; giving it back lets the app in again.
func TestMemberChanges(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end scenario skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := startScenario(t, ctx, scenario.Both)
	analysis, bank := nodeOf(t, ctx, s.Analysis), nodeOf(t, ctx, s.Bank)
	for _, tc := range []struct {
		name          string
		node          string
		without, with []string
		kernel        bool // the transparent inlet's refusals come from the kernel
	}{
		{"InletNodeLosesAttribute", analysis, []string{"team=ops"}, []string{"postgres-inlet=true"}, false},
		{"OutletNodeLosesAttribute", bank, []string{"postgres-outlet=false"}, []string{"postgres-outlet=true"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			targets := []memberTarget{
				{"explicit", "sluice:" + scenario.InletPort, false},
				{"transparent", scenario.ServiceAddr, tc.kernel},
			}
			testMemberChange(t, ctx, s, tc.node, tc.without, tc.with, targets)
		})
	}
}

// keepRefusing is how long every new connection must keep being refused
// after the change took effect: longer than a warm channel's reuse and
// several of the agents' pings.
const keepRefusing = 3 * time.Second

func testMemberChange(t *testing.T, ctx context.Context, s *scenario.Scenario, node string, without, with []string, targets []memberTarget) {
	app := s.Seed.App.NS
	setAttributes := func(attrs []string) error {
		args := []string{"set-attributes", node}
		for _, a := range attrs {
			args = append(args, "--attribute", a)
		}
		return member(s, args...)(ctx)
	}
	open := map[string]net.Conn{}
	for _, tg := range targets {
		// One session ends cleanly first, so that a warm channel waits.
		c, err := openSessionAt(ctx, app, tg.addr)
		if err != nil {
			t.Fatalf("%s: before the change: %v", tg.name, err)
		}
		c.Close()
		if open[tg.name], err = openSessionAt(ctx, app, tg.addr); err != nil {
			t.Fatalf("%s: before the change: %v", tg.name, err)
		}
		defer open[tg.name].Close()
	}
	time.Sleep(100 * time.Millisecond) // the first sessions' channels are warm now
	start := time.Now()
	if err := setAttributes(without); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, tg := range targets {
		wg.Go(func() { closedWithin(t, tg.name, open[tg.name], start.Add(policyWithin)) })
	}
	for _, tg := range targets {
		took, err := firstRefusal(ctx, app, tg, start, 3*policyWithin)
		if err != nil || took > policyWithin {
			t.Errorf("%s: new connections refused %v after the change (%v); want within %v", tg.name, took, err, policyWithin)
		}
	}
	wg.Wait()
	// From then on, every attempt is refused, the kernel's way where the
	// kernel denies.
	for n := 0; time.Since(start) < policyWithin+keepRefusing; n++ {
		for _, tg := range targets {
			if err := refusal(ctx, app, tg, time.Since(start) > policyWithin); err != nil {
				t.Fatalf("%s: attempt %d, %v after the change: %v", tg.name, n, time.Since(start), err)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	back := time.Now()
	if err := setAttributes(with); err != nil {
		t.Fatal(err)
	}
	for _, tg := range targets {
		var c net.Conn
		var err error
		for c, err = openSessionAt(ctx, app, tg.addr); err != nil && time.Since(back) < policyWithin; c, err = openSessionAt(ctx, app, tg.addr) {
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("%s: still refused %v after the attribute came back: %v", tg.name, policyWithin, err)
			continue
		}
		c.Close()
	}
}

// refusal makes one attempt through tg that must be refused: reset by the
// agent after the connection was accepted, or refused by the kernel at once
// (always, once kernelNow, for an inlet the kernel denies).
func refusal(ctx context.Context, ns *testenv.NS, tg memberTarget, kernelNow bool) error {
	c, err := openSessionAt(ctx, ns, tg.addr)
	switch {
	case err == nil:
		c.Close()
		return errors.New("the connection reached PostgreSQL")
	case errors.Is(err, syscall.ECONNREFUSED):
		return nil
	case kernelNow && tg.kernel:
		return err
	case errors.Is(err, syscall.ECONNRESET):
		return nil
	}
	return err
}

// firstRefusal tries tg until an attempt is refused and returns how long
// after since that was.
func firstRefusal(ctx context.Context, ns *testenv.NS, tg memberTarget, since time.Time, limit time.Duration) (time.Duration, error) {
	for {
		err := refusal(ctx, ns, tg, false)
		if err == nil {
			return time.Since(since), nil
		}
		if time.Since(since) > limit {
			return time.Since(since), err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// closedWithin checks that an established session is closed by deadline.
func closedWithin(t *testing.T, name string, c net.Conn, deadline time.Time) {
	t.Helper()
	c.SetReadDeadline(deadline)
	var b [1]byte
	_, err := c.Read(b[:])
	var ne net.Error
	switch {
	case err == nil:
		t.Errorf("%s: the established connection still carries data", name)
	case errors.As(err, &ne) && ne.Timeout():
		t.Errorf("%s: the established connection was not closed by %v", name, deadline)
	}
}
