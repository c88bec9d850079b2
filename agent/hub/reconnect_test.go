package hub_test

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/wire"
)

// TestReconnectJitter: agents that lose the hub at the same moment must not
// come back at the same moments. Ten agents lose a hub that stops; a
// listener in its place records their attempts (and fails them) for 1.5 s.
// With fixed waits the attempts come in a handful of bursts; with jitter
// they spread over the interval.
func TestReconnectJitter(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	for range 10 {
		h.Enroll(t, nil)
	}
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", h.Addr)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var (
		mu       sync.Mutex
		attempts []time.Duration
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			attempts = append(attempts, time.Since(start))
			mu.Unlock()
			c.Close()
		}
	}()
	time.Sleep(1500 * time.Millisecond)
	ln.Close()
	mu.Lock()
	defer mu.Unlock()
	const slot = 25 * time.Millisecond
	slots := map[time.Duration]bool{}
	for _, a := range attempts {
		slots[a/slot] = true
	}
	// Fixed waits: 10 attempts in each of about 4 bursts, in 4 to 8 slots.
	// Full jitter: about 40 attempts over 60 slots, in 20 to 35.
	if len(attempts) < 10 || len(slots) < 15 {
		t.Errorf("%d reconnection attempts fell in %d slots of %v: the agents came back together (%v)", len(attempts), len(slots), slot, attempts)
	}
}

// TestRevokedAgentStops: an agent whose node was revoked stops trying to
// reconnect, and says why (Done, Err); it does not retry forever.
func TestRevokedAgentStops(t *testing.T) {
	var accepts atomic.Int64
	h := testhub.Start(t, testhub.Options{Listener: func(ln net.Listener) net.Listener { return &countingListener{ln, &accepts} }})
	a := h.Enroll(t, nil)
	if _, err := h.Relay().Revoke(a.Identity.ID()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Client.Done():
	case <-time.After(wait):
		t.Fatalf("the revoked agent is still trying: %+v", a.Client.Status())
	}
	if err := a.Client.Err(); !errors.Is(err, wire.ErrMemberRevoked) {
		t.Errorf("Err() = %v, want wire.ErrMemberRevoked", err)
	}
	n := accepts.Load()
	time.Sleep(time.Second) // the first retries would come within 300ms
	if more := accepts.Load() - n; more > 0 {
		t.Errorf("the revoked agent connected %d more times after it stopped", more)
	}
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}
