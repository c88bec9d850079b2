package limit

import (
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	now := time.Unix(1000, 0)
	b := NewBucket(10, 3)
	for i := range 3 {
		if !b.Take(now) {
			t.Fatalf("take %d of a full bucket of 3 refused", i+1)
		}
	}
	if b.Take(now) {
		t.Fatal("an empty bucket gave a token")
	}
	if b.Full(now) {
		t.Fatal("an empty bucket says it is full")
	}
	// 10 per second: one token after 100ms, not before.
	if b.Take(now.Add(99 * time.Millisecond)) {
		t.Fatal("a token came back before 1/rate")
	}
	if !b.Take(now.Add(100 * time.Millisecond)) {
		t.Fatal("no token after 1/rate")
	}
	// Never more than the burst, however long the bucket waited.
	later := now.Add(time.Hour)
	if !b.Full(later) {
		t.Fatal("the bucket did not refill")
	}
	for range 3 {
		b.Take(later)
	}
	if b.Take(later) {
		t.Fatal("the bucket held more than its burst")
	}
	// A clock that goes back gives nothing.
	if b.Take(now) {
		t.Fatal("a clock going back gave a token")
	}
}

func TestZeroBucketRefuses(t *testing.T) {
	var b Bucket
	if b.Take(time.Now()) {
		t.Fatal("the zero bucket gave a token")
	}
}

func TestEvery(t *testing.T) {
	e := Every{Interval: time.Second}
	now := time.Unix(1000, 0)
	if ok, n := e.Allow(now); !ok || n != 0 {
		t.Fatalf("first event: %v, %d; want allowed, 0 held back", ok, n)
	}
	for range 5 {
		if ok, _ := e.Allow(now.Add(500 * time.Millisecond)); ok {
			t.Fatal("an event within the interval was allowed")
		}
	}
	if ok, n := e.Allow(now.Add(time.Second)); !ok || n != 5 {
		t.Fatalf("event after the interval: %v, %d; want allowed, 5 held back", ok, n)
	}
}

func TestBucketWait(t *testing.T) {
	now := time.Unix(1000, 0)
	b := NewBucket(10, 1)
	if d := b.Wait(now); d != 0 {
		t.Fatalf("a full bucket waits %v", d)
	}
	b.Take(now)
	if d := b.Wait(now); d != 100*time.Millisecond {
		t.Fatalf("an empty bucket of 10/s waits %v, want 100ms", d)
	}
	if d := b.Wait(now.Add(60 * time.Millisecond)); d < 39*time.Millisecond || d > 41*time.Millisecond {
		t.Fatalf("60ms later it waits %v, want 40ms", d)
	}
	var z Bucket
	if d := z.Wait(now); d != time.Hour {
		t.Fatalf("the zero bucket waits %v, want an hour", d)
	}
}
