package portal_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/pipe"
	"github.com/sluicehq/sluice/agent/portal"
)

// The tests run the whole path in-process:
//
//	app ──> inlet (agent "in") ──> hub ──> outlet (agent "out") ──> target
//
// Both agents are relay clients of one hub; each has a portal.Manager built
// from its grant, as the agent daemon builds it.

// wait bounds every blocking step; tests pass long before it.
const wait = 10 * time.Second

// node is an agent with its portals.
type node struct {
	*testhub.Agent
	m    *portal.Manager
	logs *observer.ObservedLogs
}

// logText is everything the node's portals logged, one entry a line.
func (n *node) logText() string {
	var b strings.Builder
	for _, e := range n.logs.All() {
		b.WriteString(e.Message)
		for _, f := range e.Context {
			if f.Type == zapcore.ErrorType {
				b.WriteString(" " + f.Interface.(error).Error())
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func newNode(t testing.TB, h *testhub.Hub, opts portal.Options, attrs map[string]string, relays ...string) *node {
	t.Helper()
	return newNodeWith(t, h, testhub.AgentOptions{Direct: opts.Direct}, opts, attrs, relays...)
}

// newNodeWith is newNode with the relay client's options ao.
func newNodeWith(t testing.TB, h *testhub.Hub, ao testhub.AgentOptions, opts portal.Options, attrs map[string]string, relays ...string) *node {
	t.Helper()
	a := h.EnrollWith(t, ao, attrs, relays...)
	opts.Hub, opts.Keys, opts.Verifier = a.Client, a.Keys, a.Verifier
	if opts.MemberStateCurrent == nil {
		opts.MemberStateCurrent = func() bool { return !a.Client.Status().Stale }
	}
	core, logs := observer.New(zapcore.DebugLevel)
	if opts.Logger == nil {
		opts.Logger = zap.New(core)
	}
	m := portal.New(opts)
	a.OnIncoming(m.HandleSession)
	t.Cleanup(func() { m.Close() })
	for _, r := range relays {
		if err := a.Client.Claim(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	return &node{a, m, logs}
}

func (n *node) inlet(t testing.TB, spec portal.InletSpec) string {
	t.Helper()
	if spec.From == "" {
		spec.From = "127.0.0.1:0"
	}
	info, err := n.m.AddInlet(spec)
	if err != nil {
		t.Fatal(err)
	}
	return info.Listening
}

func (n *node) outlet(t testing.TB, spec portal.OutletSpec) {
	t.Helper()
	if _, err := n.m.AddOutlet(spec); err != nil {
		t.Fatal(err)
	}
}

func (n *node) inletCounters(t *testing.T, name string) portal.CounterValues {
	t.Helper()
	for _, i := range n.m.Inlets() {
		if i.Name == name {
			return i.Counters
		}
	}
	t.Fatalf("no inlet %q", name)
	return portal.CounterValues{}
}

func (n *node) outletCounters(t *testing.T, name string) portal.CounterValues {
	t.Helper()
	for _, o := range n.m.Outlets() {
		if o.Name == name {
			return o.Counters
		}
	}
	t.Fatalf("no outlet %q", name)
	return portal.CounterValues{}
}

// eventually polls get until it returns want.
func eventually(t *testing.T, what string, get func() portal.CounterValues, want portal.CounterValues) {
	t.Helper()
	var got portal.CounterValues
	if !testhub.WaitFor(wait, func() bool { got = get(); return got == want }) {
		t.Errorf("%s counters %+v, want %+v", what, got, want)
	}
}

// settled waits until a portal has no open connection and returns its
// counters with the byte counts left out: how far a refused connection's
// first bytes got depends on timing.
func settled(t *testing.T, what string, get func() portal.CounterValues) portal.CounterValues {
	t.Helper()
	var got portal.CounterValues
	if !testhub.WaitFor(wait, func() bool { got = get(); return got.Accepted > 0 && got.Active == 0 }) {
		t.Errorf("%s still has open connections: %+v", what, got)
	}
	got.BytesIn, got.BytesOut = 0, 0
	return got
}

// target is a TCP service that answers every chunk it reads with
// transform(chunk), passes half-closes on, and resets the connection when it
// reads "reset!".
type target struct {
	addr     string
	accepted atomic.Int64
	ended    chan error // how each connection's reading ended: nil for EOF
}

func newTarget(t *testing.T, transform func([]byte) []byte) *target {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tg := &target{addr: ln.Addr().String(), ended: make(chan error, 128)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[*net.TCPConn]bool{}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			tg.accepted.Add(1)
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				tg.ended <- tg.serve(c, transform)
				c.Close()
			}()
		}
	}()
	return tg
}

func (tg *target) serve(c *net.TCPConn, transform func([]byte) []byte) error {
	c.SetDeadline(time.Now().Add(wait))
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if bytes.Equal(buf[:n], []byte("reset!")) {
			pipe.TCP(c).Abort()
			return nil
		}
		if n > 0 {
			if _, werr := c.Write(transform(buf[:n])); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return c.CloseWrite()
		}
		if err != nil {
			return err
		}
	}
}

// end waits for a connection of the target to end and returns how.
func (tg *target) end(t *testing.T) error {
	t.Helper()
	select {
	case err := <-tg.ended:
		return err
	case <-time.After(wait):
		t.Fatal("the target's connection did not end")
		return nil
	}
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(wait))
	return c.(*net.TCPConn)
}

// roundTrip sends msg, half-closes and reads the whole answer.
func roundTrip(c *net.TCPConn, msg []byte) ([]byte, error) {
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	if err := c.CloseWrite(); err != nil {
		return nil, err
	}
	return io.ReadAll(c)
}

// refused checks that the app's connection is closed with no data: EOF or a
// reset.
// refusedAt connects to an inlet that must refuse, sends msg if it gets the
// chance, and checks the refusal. On loopback the inlet's reset can arrive
// before connect(2) has reported success, so a reset while dialing counts too.
func refusedAt(t *testing.T, addr string, msg []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		if !pipe.IsReset(err) {
			t.Errorf("dial %s: %v; want a connection that is then refused", addr, err)
		}
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	if len(msg) > 0 {
		c.Write(msg) // may fail if the refusal came first
	}
	refused(t, c.(*net.TCPConn))
}

func refused(t *testing.T, c *net.TCPConn) {
	t.Helper()
	got, err := io.ReadAll(c)
	if len(got) != 0 || (err != nil && !pipe.IsReset(err)) {
		t.Errorf("app read %q, %v; want the connection closed without data", got, err)
	}
}

// standard builds the usual pair: agent "out" with outlet "web" to an
// uppercasing target, allowing web-inlet; agent "in" with inlet "web"
// allowing web-outlet. inAttrs and inAllow, when set, replace the inlet
// agent's attributes and the inlet's policy.
type standard struct {
	h         *testhub.Hub
	out, in   *node
	tg        *target
	inletAddr string
}

func newStandard(t *testing.T, inAttrs map[string]string, inAllow string) *standard {
	t.Helper()
	opts := pathOptions(t)
	s := newStandardWith(t, opts, inAttrs, inAllow)
	if opts.Direct {
		// Registered after the nodes' cleanups, so it runs before them.
		// Where nothing drops SYNs (loopback) a direct attempt is a race
		// that a loaded machine can lose: then the channel went through
		// the hub, which is no failure of the test's subject.
		t.Cleanup(func() { t.Logf("paths: %+v", s.in.m.Direct()) })
	}
	return s
}

// newStandardWith is newStandard with both nodes' portal options opts.
func newStandardWith(t *testing.T, opts portal.Options, inAttrs map[string]string, inAllow string) *standard {
	t.Helper()
	if inAttrs == nil {
		inAttrs = map[string]string{"web-inlet": "true"}
	}
	if inAllow == "" {
		inAllow = "web-outlet"
	}
	s := &standard{h: testhub.Start(t, testhub.Options{})}
	s.tg = newTarget(t, bytes.ToUpper)
	s.out = newNode(t, s.h, opts, map[string]string{"web-outlet": "true"}, "web")
	s.out.outlet(t, portal.OutletSpec{Name: "web", To: s.tg.addr, Allow: "web-inlet"})
	s.in = newNode(t, s.h, opts, inAttrs)
	s.inletAddr = s.in.inlet(t, portal.InletSpec{Name: "web", Via: "web", Allow: inAllow})
	return s
}

func (s *standard) inletCounters(t *testing.T) func() portal.CounterValues {
	return func() portal.CounterValues { return s.in.inletCounters(t, "web") }
}

func (s *standard) outletCounters(t *testing.T) func() portal.CounterValues {
	return func() portal.CounterValues { return s.out.outletCounters(t, "web") }
}

func TestConcurrentConnections(t *testing.T) { bothPaths(t, testConcurrentConnections) }

func testConcurrentConnections(t *testing.T) {
	const n = 50
	s := newStandard(t, nil, "")
	var total int64
	msgs := make([][]byte, n)
	for i := range msgs {
		msgs[i] = bytes.Repeat(fmt.Appendf(nil, "connection %d says hello; ", i), 50*(i%7+1))
		total += int64(len(msgs[i]))
	}
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for i, msg := range msgs {
		c := dial(t, s.inletAddr)
		wg.Go(func() {
			got, err := roundTrip(c, msg)
			if err == nil && !bytes.Equal(got, bytes.ToUpper(msg)) {
				err = fmt.Errorf("got %d bytes %.40q..., want %.40q...", len(got), got, bytes.ToUpper(msg))
			}
			if err != nil {
				errc <- fmt.Errorf("connection %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	for range n {
		if err := s.tg.end(t); err != nil {
			t.Errorf("a target connection ended with %v, want EOF", err)
		}
	}
	want := portal.CounterValues{Accepted: n, BytesIn: total, BytesOut: total}
	eventually(t, "inlet", s.inletCounters(t), want)
	eventually(t, "outlet", s.outletCounters(t), want)
	if got := s.tg.accepted.Load(); got != n {
		t.Errorf("target accepted %d connections, want %d", got, n)
	}
}

// TestOutletPolicyRefuses: the inlet agent lacks the attribute the outlet
// requires; the outlet refuses the channel and nothing reaches the target.
func TestOutletPolicyRefuses(t *testing.T) { bothPaths(t, testOutletPolicyRefuses) }

func testOutletPolicyRefuses(t *testing.T) {
	s := newStandard(t, map[string]string{"web-inlet": "false"}, "")
	refusedAt(t, s.inletAddr, []byte("let me in"))
	eventually(t, "outlet", s.outletCounters(t), portal.CounterValues{Refused: 1})
	if got := s.tg.accepted.Load(); got != 0 {
		t.Errorf("the target accepted %d connections", got)
	}
	got := settled(t, "inlet", s.inletCounters(t))
	if got.Failed != 0 || got.Accepted != 1 {
		t.Errorf("inlet counters %+v, want 1 accepted, none failed", got)
	}
	if got.Refused != 1 {
		t.Errorf("inlet Refused = %d, want 1", got.Refused)
	}
}

// TestInletPolicyRefuses: the inlet does not trust the outlet agent's
// attributes, so it refuses during the handshake, before the outlet dials.
func TestInletPolicyRefuses(t *testing.T) { bothPaths(t, testInletPolicyRefuses) }

func testInletPolicyRefuses(t *testing.T) {
	s := newStandard(t, nil, `env == "prod"`)
	refusedAt(t, s.inletAddr, nil)
	eventually(t, "inlet", s.inletCounters(t), portal.CounterValues{Accepted: 1, Refused: 1})
	if got := s.out.outletCounters(t, "web"); got.Accepted != 0 {
		t.Errorf("outlet counters %+v, want nothing accepted", got)
	}
	if got := s.tg.accepted.Load(); got != 0 {
		t.Errorf("the target accepted %d connections", got)
	}
}

func TestTargetUnreachable(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := ln.Addr().String()
	ln.Close()
	out := newNode(t, h, portal.Options{}, map[string]string{"web-outlet": "true"}, "web")
	out.outlet(t, portal.OutletSpec{Name: "web", To: gone, Allow: "web-inlet"})
	in := newNode(t, h, portal.Options{}, map[string]string{"web-inlet": "true"})
	addr := in.inlet(t, portal.InletSpec{Name: "web", Via: "web", Allow: "web-outlet"})

	refusedAt(t, addr, []byte("anyone there?"))
	eventually(t, "outlet", func() portal.CounterValues { return out.outletCounters(t, "web") },
		portal.CounterValues{Accepted: 1, Failed: 1})
	// The inlet does not count it (see the report): it is neither refused
	// nor a failure to open the channel.
	if got := settled(t, "inlet", func() portal.CounterValues { return in.inletCounters(t, "web") }); got.Refused != 0 {
		t.Errorf("inlet counters %+v, want nothing refused", got)
	}
}

// TestResetPropagates: an RST on one end reaches the other end as an RST,
// through the inlet, the hub's splice and the outlet.
func TestResetPropagates(t *testing.T) { bothPaths(t, testResetPropagates) }

func testResetPropagates(t *testing.T) {
	t.Run("from the app", func(t *testing.T) {
		s := newStandard(t, nil, "")
		c := dial(t, s.inletAddr)
		echo(t, c, "hello")
		if err := pipe.TCP(c).Abort(); err != nil {
			t.Fatal(err)
		}
		if err := s.tg.end(t); !pipe.IsReset(err) {
			t.Errorf("the target's connection ended with %v, want a reset", err)
		}
		eventually(t, "inlet", s.inletCounters(t), portal.CounterValues{Accepted: 1, BytesIn: 5, BytesOut: 5})
	})
	t.Run("from the target", func(t *testing.T) {
		s := newStandard(t, nil, "")
		c := dial(t, s.inletAddr)
		echo(t, c, "hello")
		if _, err := c.Write([]byte("reset!")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(c); !pipe.IsReset(err) {
			t.Errorf("the app's connection ended with %v, want a reset", err)
		}
	})
}

// echo checks that the path to the target is up.
func echo(t *testing.T, c *net.TCPConn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, bytes.ToUpper([]byte(msg))) {
		t.Fatalf("read %q, %v; want %q", got, err, bytes.ToUpper([]byte(msg)))
	}
}

func TestRemoveInletClosesConnections(t *testing.T) {
	s := newStandard(t, nil, "")
	c := dial(t, s.inletAddr)
	echo(t, c, "still there?")
	if err := s.in.m.RemoveInlet("web"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(c); !pipe.IsReset(err) {
		t.Errorf("the app's connection ended with %v, want a reset", err)
	}
	if err := s.tg.end(t); err == nil {
		t.Error("the target's connection ended cleanly, want an abort")
	}
	if got := s.in.m.Inlets(); len(got) != 0 {
		t.Errorf("inlets %+v after RemoveInlet", got)
	}
	if c, err := net.Dial("tcp", s.inletAddr); err == nil {
		c.Close()
		t.Error("the removed inlet still accepts connections")
	}
}

func TestRemoveOutletClosesConnections(t *testing.T) {
	s := newStandard(t, nil, "")
	c := dial(t, s.inletAddr)
	echo(t, c, "still there?")
	if err := s.out.m.RemoveOutlet("web"); err != nil {
		t.Fatal(err)
	}
	if err := s.tg.end(t); !pipe.IsReset(err) {
		t.Errorf("the target's connection ended with %v, want a reset", err)
	}
	if _, err := io.ReadAll(c); !pipe.IsReset(err) {
		t.Errorf("the app's connection ended with %v, want a reset", err)
	}
	// New connections find no outlet.
	refusedAt(t, s.inletAddr, nil)
	if got := s.tg.accepted.Load(); got != 1 {
		t.Errorf("the target accepted %d connections, want 1", got)
	}
}

func TestOutletSelection(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	upper, lower := newTarget(t, bytes.ToUpper), newTarget(t, bytes.ToLower)
	out := newNode(t, h, portal.Options{}, map[string]string{"svc": "true"}, "svc")
	out.outlet(t, portal.OutletSpec{Name: "alpha", To: upper.addr, Allow: "client"})
	out.outlet(t, portal.OutletSpec{Name: "beta", To: lower.addr, Allow: "client"})
	in := newNode(t, h, portal.Options{}, map[string]string{"client": "true"})
	for _, c := range []struct {
		inlet, outlet string
		want          string // "" for refused
	}{
		{"to-alpha", "alpha", "MIXED CASE"},
		{"to-beta", "beta", "mixed case"},
		{"to-any", "", ""},        // two outlets: the inlet must name one
		{"to-gamma", "gamma", ""}, // no such outlet
	} {
		t.Run(c.inlet, func(t *testing.T) {
			addr := in.inlet(t, portal.InletSpec{Name: c.inlet, Via: "svc", Outlet: c.outlet, Allow: "svc"})
			if c.want == "" {
				refusedAt(t, addr, nil)
				// Not a policy refusal: the far agent has no such outlet.
				got := settled(t, c.inlet, func() portal.CounterValues { return in.inletCounters(t, c.inlet) })
				if got.Failed != 1 || got.Refused != 0 {
					t.Errorf("inlet %s counters %+v, want 1 failed, 0 refused", c.inlet, got)
				}
				if !strings.Contains(in.logText(), "no such outlet") {
					t.Errorf("inlet log does not say the outlet is missing")
				}
				return
			}
			got, err := roundTrip(dial(t, addr), []byte("Mixed Case"))
			if err != nil || string(got) != c.want {
				t.Errorf("read %q, %v; want %q", got, err, c.want)
			}
		})
	}
	for name, tg := range map[string]*target{"alpha": upper, "beta": lower} {
		if got := tg.accepted.Load(); got != 1 {
			t.Errorf("outlet %s's target accepted %d connections, want 1", name, got)
		}
	}
	for _, name := range []string{"alpha", "beta"} {
		eventually(t, name, func() portal.CounterValues { return out.outletCounters(t, name) },
			portal.CounterValues{Accepted: 1, BytesIn: 10, BytesOut: 10})
	}
}

func TestInletConnectionLimit(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	tg := newTarget(t, bytes.ToUpper)
	out := newNode(t, h, portal.Options{}, map[string]string{"web-outlet": "true"}, "web")
	out.outlet(t, portal.OutletSpec{Name: "web", To: tg.addr, Allow: "web-inlet"})
	in := newNode(t, h, portal.Options{MaxConns: 1}, map[string]string{"web-inlet": "true"})
	addr := in.inlet(t, portal.InletSpec{Name: "web", Via: "web", Allow: "web-outlet"})

	counters := func() portal.CounterValues { return in.inletCounters(t, "web") }
	first := dial(t, addr)
	echo(t, first, "one")
	// The inlet resets the connection as soon as it accepts it, which can be
	// before the dialer has seen its connect succeed.
	second, err := net.Dial("tcp", addr)
	if err == nil {
		second.SetDeadline(time.Now().Add(wait))
		_, err = io.ReadAll(second)
		second.Close()
	}
	if !pipe.IsReset(err) {
		t.Errorf("a connection over the limit ended with %v, want a reset", err)
	}
	var got portal.CounterValues
	if !testhub.WaitFor(wait, func() bool {
		got = counters()
		return got.Accepted == 2 && got.Active == 1 && got.Failed == 1 && got.Refused == 0
	}) {
		t.Errorf("inlet counters %+v, want 2 accepted, 1 active, 1 failed", got)
	}
	// The first connection is unaffected.
	answer, err := roundTrip(first, []byte(" two"))
	if err != nil || string(answer) != " TWO" {
		t.Errorf("read %q, %v; want \" TWO\"", answer, err)
	}
	eventually(t, "inlet", counters, portal.CounterValues{Accepted: 2, Failed: 1, BytesIn: 7, BytesOut: 7})
}

// TestDirect: an inlet with Direct reaches the outlet agent's own listener,
// without the hub, with the same authentication and policies.
func TestDirect(t *testing.T) {
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // last: the agents' managers end the channels first
	s := newStandard(t, nil, "")
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	wg.Go(func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			wg.Go(func() { s.out.m.ServeDirect(c) })
		}
	})
	addr := s.in.inlet(t, portal.InletSpec{Name: "direct", Direct: ln.Addr().String(), Allow: "web-outlet"})
	echo(t, dial(t, addr), "straight to the outlet")
	refusing := s.in.inlet(t, portal.InletSpec{Name: "picky", Direct: ln.Addr().String(), Allow: "nobody"})
	refusedAt(t, refusing, []byte("hello"))
	eventually(t, "picky inlet", func() portal.CounterValues { return s.in.inletCounters(t, "picky") },
		portal.CounterValues{Accepted: 1, Refused: 1})
}

// TestWarmChannels: a channel whose connection ended cleanly carries the
// next one; one the outlet's agent dropped meanwhile is not used, and the
// connection goes through a new channel without losing a byte.
func TestWarmChannels(t *testing.T) {
	s := newStandard(t, nil, "")
	info := func() portal.InletInfo {
		for _, in := range s.in.m.Inlets() {
			if in.Name == "web" {
				return in
			}
		}
		t.Fatal("inlet web is gone")
		return portal.InletInfo{}
	}
	for i := range 3 {
		c := dial(t, s.inletAddr)
		msg := fmt.Appendf(nil, "connection %d", i)
		got, err := roundTrip(c, msg)
		if err != nil || !bytes.Equal(got, bytes.ToUpper(msg)) {
			t.Fatalf("connection %d: %q, %v", i, got, err)
		}
		deadline := time.Now().Add(wait)
		for info().Warm != 1 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	if in := info(); in.Channels != 1 || in.Warm != 1 || in.Counters.Accepted != 3 || in.WarmReused != 2 {
		t.Fatalf("after 3 connections one after another: %d channels opened, %d warm, %d accepted, %d carried warm; want 1, 1, 3, 2",
			in.Channels, in.Warm, in.Counters.Accepted, in.WarmReused)
	}
	// The outlet's agent restarts its portals: the warm channel dies. The
	// inlet may take it before its end arrives; the connection must then
	// go through a new channel all the same, every byte of it.
	if err := s.out.m.RemoveOutlet("web"); err != nil {
		t.Fatal(err)
	}
	s.out.outlet(t, portal.OutletSpec{Name: "web", To: s.tg.addr, Allow: "web-inlet"})
	got, err := roundTrip(dial(t, s.inletAddr), []byte("after the restart"))
	if err != nil || string(got) != "AFTER THE RESTART" {
		t.Fatalf("the first connection after the outlet's restart: %q, %v; want the whole answer\n%s", got, err, s.in.logText())
	}
	if in := info(); in.Channels != 2 || in.Counters.Failed != 0 || in.Counters.Refused != 0 {
		t.Errorf("%d channels opened, counters %+v; want a new channel and nothing failed", in.Channels, in.Counters)
	}
}

// TestOutletBoundsWarmWait: the outlet does not wait for ever for the next
// open request on a warm channel: past its wait it closes the channel, and
// the inlet's next connection goes through a new one, whole.
func TestOutletBoundsWarmWait(t *testing.T) {
	t.Cleanup(portal.SetWarmWaitForTest(200 * time.Millisecond)) // first: it runs after the agents have stopped
	s := newStandard(t, nil, "")
	s.warmUp(t)
	if !testhub.WaitFor(wait, func() bool {
		return strings.Contains(s.out.logText(), "warm channel closed: no open request in time")
	}) {
		t.Fatalf("the outlet still waits on the warm channel:\n%s", s.out.logText())
	}
	got, err := roundTrip(dial(t, s.inletAddr), []byte("after the wait"))
	if err != nil || string(got) != "AFTER THE WAIT" {
		t.Fatalf("the next connection: %q, %v", got, err)
	}
	if in := s.inletInfo(t); in.Channels != 2 || in.Counters.Failed != 0 {
		t.Errorf("%d channels opened, counters %+v; want a new channel, nothing failed", in.Channels, in.Counters)
	}
}
