package hub_test

import (
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/relay"
)

// punchPair is an owner of relay "svc" and an inlet node, both asking for
// direct paths; the owner reports its incoming sessions on the channel.
func punchPair(t *testing.T, h *testhub.Hub, inletOpts testhub.AgentOptions) (owner, inlet *testhub.Agent, incoming <-chan relay.Incoming) {
	t.Helper()
	owner = h.EnrollWith(t, testhub.AgentOptions{Direct: true}, nil, "svc")
	ch := make(chan relay.Incoming, 16)
	owner.OnIncoming(func(in relay.Incoming) { ch <- in })
	claim(t, owner, "svc")
	inletOpts.Direct = true
	inlet = h.EnrollWith(t, inletOpts, nil)
	return owner, inlet, ch
}

func nextIncoming(t *testing.T, ch <-chan relay.Incoming) relay.Incoming {
	t.Helper()
	select {
	case in := <-ch:
		return in
	case <-time.After(10 * time.Second):
		t.Fatal("no incoming session")
		return relay.Incoming{}
	}
}

// localIP checks that a has a control link to bind a direct path's port on.
func localIP(t *testing.T, a *testhub.Agent) {
	t.Helper()
	if _, ok := a.Client.PunchLocal(nil); !ok {
		t.Fatal("no control link")
	}
}

// TestPunchOffered: two agents that keep their ports (loopback) and ask
// for direct paths are offered one: the owner hears the inlet's address
// and port, the inlet the owner's port once the owner punched; a dial with
// port 0 is offered none.
func TestPunchOffered(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	owner, inlet, incoming := punchPair(t, h, testhub.AgentOptions{})
	localIP(t, inlet)
	d, err := inlet.Client.DialPort(t.Context(), "svc", 40001)
	if err != nil || !d.Punch {
		t.Fatalf("dial with a port: %+v, %v; want a punch offered", d, err)
	}
	in := nextIncoming(t, incoming)
	if in.Punch.String() != "127.0.0.1:40001" {
		t.Errorf("the owner was told to connect to %v, want 127.0.0.1:40001", in.Punch)
	}
	if err := owner.Client.Punch(t.Context(), in.Token, 40002); err != nil {
		t.Fatalf("owner's punch: %v", err)
	}
	at, err := inlet.Client.AwaitPunch(t.Context(), d.Token)
	if err != nil || at.String() != "127.0.0.1:40002" {
		t.Errorf("inlet told %v, %v; want 127.0.0.1:40002", at, err)
	}
	if err := owner.Client.Punch(t.Context(), in.Token, 40003); !errors.Is(err, relay.ErrRefused) {
		t.Errorf("a second punch for one session: %v, want refused", err)
	}
	if n := h.Relay().Stats().Punches; n != 1 {
		t.Errorf("hub counted %d punches, want 1", n)
	}
	inlet.Client.PunchDone(d.Token)
	if !testhub.WaitFor(10*time.Second, func() bool { return h.Relay().Stats().Direct == 1 && h.Relay().Stats().Pending == 0 }) {
		t.Errorf("the hub did not forget the direct session's pairing: %+v", h.Relay().Stats())
	}

	d, err = inlet.Client.DialPort(t.Context(), "svc", 0)
	if err != nil || d.Punch {
		t.Errorf("dial with port 0: %+v, %v; want no punch", d, err)
	}
	if in := nextIncoming(t, incoming); in.Punch.IsValid() {
		t.Errorf("the owner was told to punch for a dial that wanted none: %v", in.Punch)
	}
}

// TestNoPunchWhenPortsChange: an agent whose control connection reaches
// the hub from another port than it bound (a NAT that does not keep
// ports; here a forwarder) is never offered a direct path, as inlet or as
// owner.
func TestNoPunchWhenPortsChange(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	fw := h.Forward(t)
	_, inlet, incoming := punchPair(t, h, testhub.AgentOptions{Hubs: []string{fw.Addr}})
	d, err := inlet.Client.DialPort(t.Context(), "svc", 40001)
	if err != nil || d.Punch {
		t.Fatalf("dial from behind a port-changing NAT: %+v, %v; want no punch", d, err)
	}
	if in := nextIncoming(t, incoming); in.Punch.IsValid() {
		t.Errorf("the owner was told to punch to an inlet behind a port-changing NAT: %v", in.Punch)
	}

	owner2 := h.EnrollWith(t, testhub.AgentOptions{Direct: true, Hubs: []string{fw.Addr}}, nil, "svc2")
	owner2.OnIncoming(func(relay.Incoming) {})
	claim(t, owner2, "svc2")
	direct := h.EnrollWith(t, testhub.AgentOptions{Direct: true}, nil)
	if d, err := direct.Client.DialPort(t.Context(), "svc2", 40001); err != nil || d.Punch {
		t.Errorf("dial to an owner behind a port-changing NAT: %+v, %v; want no punch", d, err)
	}
}

// TestPunchNeedsBothAsking: an agent that did not ask for direct paths
// (agent run --direct-paths off) is offered none, as inlet or as owner.
func TestPunchNeedsBothAsking(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	_, _, _ = punchPair(t, h, testhub.AgentOptions{})
	off := h.Enroll(t, nil)
	if d, err := off.Client.DialPort(t.Context(), "svc", 40001); err != nil || d.Punch {
		t.Errorf("dial of an agent that asked for no direct path: %+v, %v; want no punch", d, err)
	}
	offOwner := h.Enroll(t, nil, "svc3")
	offOwner.OnIncoming(func(relay.Incoming) {})
	claim(t, offOwner, "svc3")
	on := h.EnrollWith(t, testhub.AgentOptions{Direct: true}, nil)
	if d, err := on.Client.DialPort(t.Context(), "svc3", 40001); err != nil || d.Punch {
		t.Errorf("dial to an owner that asked for no direct path: %+v, %v; want no punch", d, err)
	}
}

// TestPunchAttacks: the hub passes a punch on only from the session's
// owner, with its own token and a real port; a dial's port must be a TCP
// port; only the session's inlet may say it went direct.
func TestPunchAttacks(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	owner, inlet, incoming := punchPair(t, h, testhub.AgentOptions{})
	for _, port := range []int{65536, -1, 1 << 20} {
		if _, err := inlet.Client.DialPort(t.Context(), "svc", port); !errors.Is(err, relay.ErrMalformed) {
			t.Errorf("dial with port %d: %v, want malformed", port, err)
		}
	}
	d, err := inlet.Client.DialPort(t.Context(), "svc", 40001)
	if err != nil || !d.Punch {
		t.Fatalf("dial: %+v, %v", d, err)
	}
	in := nextIncoming(t, incoming)
	third := h.EnrollWith(t, testhub.AgentOptions{Direct: true}, nil)
	for _, c := range []struct {
		what  string
		by    *testhub.Agent
		token []byte
		port  int
	}{
		{"the inlet, with its own token", inlet, d.Token, 40002},
		{"the inlet, with the owner's token", inlet, in.Token, 40002},
		{"another node, with the owner's token", third, in.Token, 40002},
		{"the owner, with the inlet's token", owner, d.Token, 40002},
		{"the owner, with port 0", owner, in.Token, 0},
		{"the owner, with port 65536", owner, in.Token, 65536},
	} {
		if err := c.by.Client.Punch(t.Context(), c.token, c.port); err == nil {
			t.Errorf("punch by %s: passed on", c.what)
		}
	}
	for _, c := range []struct {
		what  string
		by    *testhub.Agent
		token []byte
	}{{"the owner", owner, in.Token}, {"another node", third, d.Token}} {
		c.by.Client.PunchDone(c.token)
	}
	time.Sleep(200 * time.Millisecond) // PunchDone does not wait for the hub
	if st := h.Relay().Stats(); st.Punches != 0 || st.Direct != 0 || st.Pending != 1 {
		t.Errorf("after the attacks: %d punches, %d direct, %d pending; want 0, 0, 1", st.Punches, st.Direct, st.Pending)
	}
	// The real owner's punch still goes through, to the inlet only.
	if err := owner.Client.Punch(t.Context(), in.Token, 40002); err != nil {
		t.Fatalf("the owner's punch after the attacks: %v", err)
	}
	if at, err := inlet.Client.AwaitPunch(t.Context(), d.Token); err != nil || at.Port() != 40002 {
		t.Errorf("inlet told %v, %v", at, err)
	}
}
