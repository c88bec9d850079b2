package portal

import (
	"errors"
	"testing"
	"time"
)

func TestIncomingLimits(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newIncomingLimits(Options{MaxPending: 3, MaxPendingPerNode: 2, IncomingRate: 1, IncomingBurst: 3})
	l.now = func() time.Time { return now }
	acquire := func(node string) func() {
		t.Helper()
		release, err := l.acquire(node)
		if err != nil {
			t.Fatalf("acquire for %s: %v", node, err)
		}
		return release
	}
	refused := func(node string) {
		t.Helper()
		if _, err := l.acquire(node); !errors.Is(err, ErrIncomingLimit) {
			t.Fatalf("acquire for %s past a limit: %v, want ErrIncomingLimit", node, err)
		}
	}
	a1 := acquire("a")
	acquire("a")
	refused("a") // a's cap of 2
	b1 := acquire("b")
	refused("b") // 3 in all
	a1()
	a1() // twice is once
	acquire("a")
	refused("c")
	if c := l.snapshot(); c.Pending != 3 || c.PendingPeak != 3 || c.Dropped != 3 || c.RateLimited != 0 {
		t.Errorf("counters %+v, want 3 pending, peak 3, 3 dropped", c)
	}
	// a's bucket: 3 at once, then one a second.
	b1()
	refused("a") // a has 2 pending again
	l = newIncomingLimits(Options{MaxPending: 100, MaxPendingPerNode: 100, IncomingRate: 1, IncomingBurst: 3})
	l.now = func() time.Time { return now }
	for range 3 {
		acquire("a")
	}
	refused("a")
	now = now.Add(time.Second)
	acquire("a")
	if c := l.snapshot(); c.RateLimited != 1 || c.Dropped != 0 {
		t.Errorf("counters %+v, want 1 rate-limited", c)
	}
}
