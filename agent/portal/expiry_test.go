package portal_test

import (
	"bytes"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/pipe"
	"github.com/sluicehq/sluice/agent/portal"
)

// lifetime is the credentials' lifetime in the expiry tests: every
// credential a channel opens with has expired this long after its handshake.
const lifetime = 3 * time.Second

// expiringPair is the standard pair with credentials of lifetime, whose
// agents' member state is current while inCurrent and outCurrent say so.
type expiringPair struct {
	*standard
	inCurrent, outCurrent atomic.Bool
}

func newExpiringPair(t *testing.T) *expiringPair {
	t.Helper()
	p := &expiringPair{standard: &standard{h: testhub.Start(t, testhub.Options{Authority: authority.Options{CredentialLifetime: lifetime}})}}
	p.inCurrent.Store(true)
	p.outCurrent.Store(true)
	p.tg = newTarget(t, bytes.ToUpper)
	outOpts, inOpts := pathOptions(t), pathOptions(t)
	outOpts.MemberStateCurrent, inOpts.MemberStateCurrent = p.outCurrent.Load, p.inCurrent.Load
	p.out = newNode(t, p.h, outOpts, map[string]string{"web-outlet": "true"}, "web")
	p.out.outlet(t, portal.OutletSpec{Name: "web", To: p.tg.addr, Allow: "web-inlet"})
	p.in = newNode(t, p.h, inOpts, map[string]string{"web-inlet": "true"})
	p.inletAddr = p.in.inlet(t, portal.InletSpec{Name: "web", Via: "web", Allow: "web-outlet"})
	return p
}

// connect opens a connection through the pair, checks it works, and
// returns it with the time by which every credential its channel was
// opened with has expired.
func (p *expiringPair) connect(t *testing.T) (*net.TCPConn, time.Time) {
	t.Helper()
	c := dial(t, p.inletAddr)
	c.SetDeadline(time.Now().Add(lifetime + 2*wait))
	echo(t, c, "before")
	return c, time.Now().Add(lifetime)
}

// sleepUntil sleeps until t, and a little more.
func sleepUntil(t time.Time) { time.Sleep(time.Until(t) + 200*time.Millisecond) }

// TestConnectionOutlivesCredential: a connection flowing when its channel's
// credentials expire goes on while both agents' member state is current;
// both agents say so, and the channel carries no further connection.
func TestConnectionOutlivesCredential(t *testing.T) { bothPaths(t, testConnectionOutlivesCredential) }

func testConnectionOutlivesCredential(t *testing.T) {
	t.Parallel()
	p := newExpiringPair(t)
	c, expired := p.connect(t)
	sleepUntil(expired)
	echo(t, c, "after the credentials expired")
	got, err := roundTrip(c, []byte(" and to the end"))
	if err != nil || string(got) != " AND TO THE END" {
		t.Fatalf("the end of the connection: %q, %v", got, err)
	}
	if err := p.tg.end(t); err != nil {
		t.Errorf("the target's connection ended with %v, want EOF", err)
	}
	for _, n := range []*node{p.in, p.out} {
		if !strings.Contains(n.logText(), "outlives its channel's credential") {
			t.Errorf("an agent did not say that the connection outlived the credential:\n%s", n.logText())
		}
	}
	// The next connection goes through a new channel.
	if got, err := roundTrip(dial(t, p.inletAddr), []byte("next")); err != nil || string(got) != "NEXT" {
		t.Fatalf("the next connection: %q, %v", got, err)
	}
	if in := p.inletInfo(t); in.Channels != 2 {
		t.Errorf("%d channels opened, want a new one for the connection after the expiry", in.Channels)
	}
}

// TestConnectionResetAtExpiry: if an agent's member state is not current
// when its channel's credential expires, or stops being current later, it
// resets the connection at both ends.
func TestConnectionResetAtExpiry(t *testing.T) { bothPaths(t, testConnectionResetAtExpiry) }

func testConnectionResetAtExpiry(t *testing.T) {
	for _, c := range []struct {
		name  string
		stale func(p *expiringPair) *atomic.Bool
		early bool // stale before the expiry, else after it
		who   func(p *expiringPair) *node
	}{
		{"outlet stale", func(p *expiringPair) *atomic.Bool { return &p.outCurrent }, true, func(p *expiringPair) *node { return p.out }},
		{"inlet stale", func(p *expiringPair) *atomic.Bool { return &p.inCurrent }, true, func(p *expiringPair) *node { return p.in }},
		{"outlet stale after the expiry", func(p *expiringPair) *atomic.Bool { return &p.outCurrent }, false, func(p *expiringPair) *node { return p.out }},
		{"inlet stale after the expiry", func(p *expiringPair) *atomic.Bool { return &p.inCurrent }, false, func(p *expiringPair) *node { return p.in }},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := newExpiringPair(t)
			conn, expired := p.connect(t)
			if c.early {
				c.stale(p).Store(false)
				sleepUntil(expired)
			} else {
				sleepUntil(expired)
				echo(t, conn, "still current")
				c.stale(p).Store(false)
			}
			if _, err := io.ReadAll(conn); !pipe.IsReset(err) {
				t.Errorf("the app's connection ended with %v, want a reset", err)
			}
			if err := p.tg.end(t); !pipe.IsReset(err) {
				t.Errorf("the target's connection ended with %v, want a reset", err)
			}
			if log := c.who(p).logText(); !strings.Contains(log, "channel reset: a credential it was opened with has expired") {
				t.Errorf("the agent whose member state is stale did not say why it reset:\n%s", log)
			}
		})
	}
}
