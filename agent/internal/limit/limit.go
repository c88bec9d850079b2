// Package limit has the two small rate tools the hub and the outlet share: a
// token bucket for requests a peer can drive, and a gate that lets a log
// line through at most once per interval.
package limit

import (
	"cmp"
	"sync"
	"time"
)

// Bucket is a token bucket: it holds up to Burst tokens and gains Rate per
// second. The zero value refuses everything; it is not safe for concurrent
// use (its owner's mutex guards it).
type Bucket struct {
	Rate  float64 // tokens per second
	Burst int     // capacity; a new bucket starts full

	tokens float64
	last   time.Time
}

// NewBucket returns a full bucket.
func NewBucket(rate float64, burst int) Bucket {
	return Bucket{Rate: rate, Burst: burst, tokens: float64(burst)}
}

// Take removes one token at now and reports whether there was one.
func (b *Bucket) Take(now time.Time) bool {
	b.refill(now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Wait is how long after now the bucket has a token again: 0 if it has
// one now. A bucket that never refills waits an hour, which callers bound.
func (b *Bucket) Wait(now time.Time) time.Duration {
	b.refill(now)
	if b.tokens >= 1 {
		return 0
	}
	if b.Rate <= 0 {
		return time.Hour
	}
	return time.Duration((1 - b.tokens) / b.Rate * float64(time.Second))
}

// Full reports whether the bucket is back to its burst at now: a full bucket
// is as good as a new one, and its owner may forget it.
func (b *Bucket) Full(now time.Time) bool {
	b.refill(now)
	return b.tokens >= float64(b.Burst)
}

func (b *Bucket) refill(now time.Time) {
	if !b.last.IsZero() && now.After(b.last) {
		b.tokens = min(float64(b.Burst), b.tokens+now.Sub(b.last).Seconds()*b.Rate)
	}
	if b.last.IsZero() || now.After(b.last) {
		b.last = now
	}
}

// Every lets one event through per interval and counts the ones it held
// back, so that a flood of refusals makes one log line a second, not one per
// refusal. The zero value lets one event through a second; safe for
// concurrent use.
type Every struct {
	Interval time.Duration // 0: one second

	mu         sync.Mutex // guards the following
	next       time.Time
	suppressed int64
}

// Allow reports whether the event at now may be logged and, if so, how many
// were held back since the last one that was.
func (e *Every) Allow(now time.Time) (ok bool, suppressed int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if now.Before(e.next) {
		e.suppressed++
		return false, 0
	}
	e.next = now.Add(cmp.Or(e.Interval, time.Second))
	suppressed, e.suppressed = e.suppressed, 0
	return true, suppressed
}
