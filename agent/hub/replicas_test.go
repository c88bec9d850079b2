package hub_test

import (
	"context"
	"errors"
	"maps"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/relay"
)

// activeByNode is the hub's count of active sessions of each replica of name.
func activeByNode(h *testhub.Hub, name string) map[string]int64 {
	out := map[string]int64{}
	for _, r := range h.Relay().Stats().Replicas[name] {
		out[r.Node] = r.Active
	}
	return out
}

// TestReplicasFewestActive: the hub hands each new session of a relay to
// the replica with the fewest active sessions: 6 sessions over 3 replicas
// are 2 each; once one replica's sessions end, the next 2 go to it.
func TestReplicasFewestActive(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	replicas := map[string]<-chan incoming{}
	var ids []string
	for range 3 {
		a := h.Enroll(t, nil, "svc")
		replicas[a.Identity.ID()] = answer(a)
		claim(t, a, "svc")
		ids = append(ids, a.Identity.ID())
	}
	in := h.Enroll(t, nil)
	conns := map[string][]*net.TCPConn{}
	open := func() string {
		conn, owner := dialData(t, in, "svc")
		s := next(t, replicas[owner])
		conns[owner] = append(conns[owner], conn, s.conn)
		return owner
	}
	count := map[string]int{}
	for range 6 {
		count[open()]++
	}
	for _, id := range ids {
		if count[id] != 2 {
			t.Errorf("sessions per replica %v, want 2 each", count)
			break
		}
	}
	want := map[string]int64{ids[0]: 2, ids[1]: 2, ids[2]: 2}
	if got := activeByNode(h, "svc"); !maps.Equal(got, want) {
		t.Errorf("hub's active counts %v, want %v", got, want)
	}

	for _, c := range conns[ids[1]] {
		c.Close()
	}
	want[ids[1]] = 0
	if !testhub.WaitFor(wait, func() bool { return maps.Equal(activeByNode(h, "svc"), want) }) {
		t.Fatalf("hub's active counts %v once a replica's sessions ended, want %v", activeByNode(h, "svc"), want)
	}
	for range 2 {
		if owner := open(); owner != ids[1] {
			t.Errorf("a new session went to %s with %d active, want the idle replica %s", owner, want[owner], ids[1])
		}
	}
}

// TestReplicaDeath: when one of two replicas dies (its control connection
// closes), new sessions go to the other within 1s (the times are logged);
// the dead one is no longer listed.
func TestReplicaDeath(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	var took []time.Duration
	for round := range 5 {
		a, b := h.Enroll(t, nil, "svc"), h.Enroll(t, nil, "svc")
		claim(t, a, "svc")
		claim(t, b, "svc")
		in := h.Enroll(t, nil)
		a.Stop()
		died := time.Now()
		for {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			_, owner, err := in.Client.Dial(ctx, "svc")
			cancel()
			if err == nil && owner == b.Identity.ID() {
				took = append(took, time.Since(died))
				break
			}
			if time.Since(died) > time.Second {
				t.Fatalf("round %d: a session still went to the dead replica (%v) 1s after it died", round, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if !testhub.WaitFor(wait, func() bool { _, ok := activeByNode(h, "svc")[a.Identity.ID()]; return !ok }) {
			t.Errorf("round %d: the dead replica is still listed: %+v", round, h.Relay().Stats().Replicas["svc"])
		}
		b.Stop()
		testhub.WaitFor(wait, func() bool { return len(activeByNode(h, "svc")) == 0 })
	}
	slices.Sort(took)
	t.Logf("new sessions on the live replica after the other died: median %v, max %v", took[len(took)/2], took[len(took)-1])
}

// TestReplicaDiesBeforeOpening: a replica that dies after the hub announced
// a session to it, before it opened its data connection, fails that
// session at once: the inlet reads relay.ErrSessionLost (and asks again),
// not a wait until the hub's SessionTimeout (set to a minute here). With
// the other replica alive the second dial goes there.
func TestReplicaDiesBeforeOpening(t *testing.T) {
	h := testhub.Start(t, testhub.Options{Hub: hub.HubOptions{SessionTimeout: time.Minute}})
	a, b := h.Enroll(t, nil, "svc"), h.Enroll(t, nil, "svc")
	announced := make(chan struct{}, 1)
	a.OnIncoming(func(relay.Incoming) { announced <- struct{}{} }) // hears of it, never opens it
	bIn := answer(b)
	claim(t, a, "svc")
	claim(t, b, "svc")
	in := h.Enroll(t, nil)
	for {
		tok, owner, err := in.Client.Dial(t.Context(), "svc")
		if err != nil {
			t.Fatal(err)
		}
		if owner != a.Identity.ID() {
			// b had fewer: end it, and ask again until a gets one.
			c, err := in.Client.OpenData(t.Context(), tok)
			if err != nil {
				t.Fatal(err)
			}
			next(t, bIn)
			c.Close()
			continue
		}
		select {
		case <-announced:
		case <-time.After(wait):
			t.Fatal("the hub did not announce the session to its replica")
		}
		a.Stop()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		start := time.Now()
		c, err := in.Client.OpenData(ctx, tok)
		if err == nil {
			c.Close()
			t.Fatal("a session announced to a replica that died opened")
		}
		if !errors.Is(err, relay.ErrSessionLost) {
			t.Fatalf("open data for a session whose replica died: %v, want relay.ErrSessionLost", err)
		}
		t.Logf("the inlet learned the session was lost %v after asking (its replica died first)", time.Since(start).Round(time.Millisecond))
		break
	}
	conn, owner := dialData(t, in, "svc")
	if owner != b.Identity.ID() {
		t.Errorf("the next session went to %s, want the live replica %s", owner, b.Identity.ID())
	}
	next(t, bIn)
	conn.Close()
}
