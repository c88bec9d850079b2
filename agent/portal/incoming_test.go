package portal

import (
	"context"
	"errors"
	"testing"
	"time"
)

// done is a context that is over: acquire may not wait.
func done() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func TestIncomingLimits(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newIncomingLimits(Options{MaxPending: 3, MaxPendingPerNode: 2, IncomingRate: 1, IncomingBurst: 3})
	l.now = func() time.Time { return now }
	acquire := func(node string) func() {
		t.Helper()
		release, err := l.acquire(done(), node)
		if err != nil {
			t.Fatalf("acquire for %s: %v", node, err)
		}
		return release
	}
	refused := func(node string) {
		t.Helper()
		if _, err := l.acquire(done(), node); !errors.Is(err, ErrIncomingLimit) {
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

// TestIncomingWaits: a push past a limit waits for room instead of being
// dropped: for a pending session of its node to end, for its bucket's next
// token; past the bound on waiting pushes it is dropped at once.
func TestIncomingWaits(t *testing.T) {
	l := newIncomingLimits(Options{MaxPending: 10, MaxPendingPerNode: 1, IncomingRate: 1000, IncomingBurst: 1000})
	first, err := l.acquire(done(), "a")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		release, err := l.acquire(context.Background(), "a")
		if err == nil {
			release()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("a second push of a node with its one pending session: %v, want a wait", err)
	case <-time.After(50 * time.Millisecond):
	}
	first()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("the waiting push, once the pending session ended: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting push was not served when the pending session ended")
	}
	if c := l.snapshot(); c.Waited != 1 || c.Dropped != 0 || c.Pending != 0 {
		t.Errorf("counters %+v, want 1 waited, none dropped or pending", c)
	}

	// The bucket: 20 a second, 1 at once; the second push waits ~50 ms.
	l = newIncomingLimits(Options{MaxPending: 10, MaxPendingPerNode: 10, IncomingRate: 20, IncomingBurst: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	for i := range 2 {
		if _, err := l.acquire(ctx, "a"); err != nil {
			t.Fatalf("push %d: %v", i+1, err)
		}
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Errorf("two pushes through a bucket of 1 at 20/s took %v, want about 50ms", d)
	}
	// A wait that ends first is a rate-limit drop.
	short, cancel2 := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel2()
	if _, err := l.acquire(short, "a"); !errors.Is(err, ErrIncomingLimit) {
		t.Fatalf("a push whose wait ended before the next token: %v, want ErrIncomingLimit", err)
	}
	if c := l.snapshot(); c.RateLimited != 1 || c.Waited != 2 {
		t.Errorf("counters %+v, want 1 rate-limited, 2 waited", c)
	}

	// At most waitFactor x MaxPendingPerNode pushes of a node wait; the
	// next is dropped at once, and a hostile hub's flood does not pile up.
	l = newIncomingLimits(Options{MaxPending: 10, MaxPendingPerNode: 1, IncomingRate: 1000, IncomingBurst: 1000})
	hold, err := l.acquire(done(), "a")
	if err != nil {
		t.Fatal(err)
	}
	bg, stop := context.WithCancel(context.Background())
	waiters := make(chan error, waitFactor)
	for range waitFactor {
		go func() { _, err := l.acquire(bg, "a"); waiters <- err }()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		w := l.waiting
		l.mu.Unlock()
		if w == waitFactor {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pushes waiting, want %d", w, waitFactor)
		}
		time.Sleep(time.Millisecond)
	}
	start = time.Now()
	if _, err := l.acquire(context.Background(), "a"); !errors.Is(err, ErrIncomingLimit) {
		t.Fatalf("a push past the waiting bound: %v, want ErrIncomingLimit", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the push past the waiting bound was refused after %v, want at once", d)
	}
	stop()
	for range waitFactor {
		if err := <-waiters; !errors.Is(err, ErrIncomingLimit) {
			t.Errorf("a waiter whose context ended: %v, want ErrIncomingLimit", err)
		}
	}
	hold()
}
