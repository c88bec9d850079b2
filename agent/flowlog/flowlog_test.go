package flowlog

import (
	"fmt"
	"testing"
	"time"
)

func ev(i int, verdict string) Event {
	return Event{Type: TypeOpen, Portal: fmt.Sprintf("p%d", i%2), Verdict: verdict, Workload: "app", Peer: "n1", Client: fmt.Sprint(i)}
}

// TestRingKeepsTheNewest checks that the ring is bounded and --last returns
// the newest events that pass the filter, oldest first.
func TestRingKeepsTheNewest(t *testing.T) {
	l := New(4)
	if got := l.Recent(Filter{}, 10); len(got) != 0 {
		t.Fatalf("empty log: %v", got)
	}
	for i := range 10 {
		l.Record(ev(i, Allowed))
	}
	got := l.Recent(Filter{}, 10)
	if len(got) != 4 || got[0].Client != "6" || got[3].Client != "9" {
		t.Fatalf("recent %+v, want clients 6..9", got)
	}
	got = l.Recent(Filter{Portal: "p1"}, 1)
	if len(got) != 1 || got[0].Client != "9" {
		t.Fatalf("last 1 of p1: %+v", got)
	}
	if got[0].Time.IsZero() {
		t.Error("event not stamped")
	}
	if got := l.Recent(Filter{}, 0); got != nil {
		t.Errorf("last 0: %v", got)
	}
}

func TestFilter(t *testing.T) {
	e := Event{Portal: "db", Verdict: Refused, Workload: "app", Peer: "n1"}
	for _, tc := range []struct {
		f    Filter
		want bool
	}{
		{Filter{}, true},
		{Filter{Portal: "db", Verdict: Refused, Workload: "app", Peer: "n1"}, true},
		{Filter{Portal: "web"}, false},
		{Filter{Verdict: Allowed}, false},
		{Filter{Workload: "other"}, false},
		{Filter{Peer: "n2"}, false},
	} {
		if got := tc.f.Match(&e); got != tc.want {
			t.Errorf("%+v matches %v, want %v", tc.f, got, tc.want)
		}
	}
}

// TestObserverFollows checks that an observer gets the past events, then
// the new ones that pass its filter, and none twice.
func TestObserverFollows(t *testing.T) {
	l := New(8)
	l.Record(ev(0, Allowed))
	l.Record(ev(1, Refused))
	past, o := l.Observe(Filter{Verdict: Refused}, 5, true, 4)
	defer o.Close()
	if len(past) != 1 || past[0].Client != "1" {
		t.Fatalf("past %+v", past)
	}
	l.Record(ev(2, Allowed))
	l.Record(ev(3, Refused))
	select {
	case e := <-o.C():
		if e.Client != "3" {
			t.Fatalf("got %+v, want client 3", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
	select {
	case e := <-o.C():
		t.Fatalf("unexpected %+v", e)
	default:
	}
	o.Close()
	l.Record(ev(5, Refused))
	if len(o.C()) != 0 {
		t.Error("a closed observer still receives")
	}
}

// TestSlowObserverLoses checks that recording never waits for an observer
// that does not read: past its queue, events are counted lost, the ring
// and other observers still get them.
func TestSlowObserverLoses(t *testing.T) {
	l := New(100)
	_, slow := l.Observe(Filter{}, 0, true, 2)
	defer slow.Close()
	_, fast := l.Observe(Filter{}, 0, true, 100)
	defer fast.Close()
	done := make(chan struct{})
	go func() {
		for i := range 10 {
			l.Record(ev(i, Allowed))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Record blocked on an observer that does not read")
	}
	if n := slow.Lost(); n != 8 {
		t.Errorf("lost %d, want 8", n)
	}
	if n := slow.Lost(); n != 0 {
		t.Errorf("Lost did not reset: %d", n)
	}
	if len(slow.C()) != 2 || len(fast.C()) != 10 || fast.Lost() != 0 {
		t.Errorf("slow queued %d, fast queued %d lost %d", len(slow.C()), len(fast.C()), fast.Lost())
	}
	if n := len(l.Recent(Filter{}, 100)); n != 10 {
		t.Errorf("ring holds %d, want 10", n)
	}
}

func TestNilLogRecordsNothing(t *testing.T) {
	var l *Log
	l.Record(Event{}) // must not panic
}
