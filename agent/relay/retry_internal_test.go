package relay

import (
	"testing"
	"time"
)

// TestRetryFullJitter: each wait is drawn in [0, min(cap, base·2^n)), and
// the draws differ.
func TestRetryFullJitter(t *testing.T) {
	var r retry
	seen := map[time.Duration]bool{}
	for n := range 20 {
		ceiling := min(retryCap, retryBase<<n)
		d := r.next()
		if d < 0 || d >= ceiling {
			t.Fatalf("wait %d = %v, want in [0, %v)", n, d, ceiling)
		}
		seen[d] = true
	}
	if len(seen) < 15 {
		t.Errorf("20 waits took %d values: not random", len(seen))
	}
	r.reset()
	if d := r.next(); d >= retryBase {
		t.Errorf("first wait after a reset %v, want below %v", d, retryBase)
	}
}

// TestNoLongerMember: only the hub's refusals that say the node is not a
// member any more stop the client.
func TestNoLongerMember(t *testing.T) {
	for code, want := range map[string]bool{"revoked": true, "not_member": true, "internal": false, "rate_limited": false} {
		if got := noLongerMember(errorOf(&Message{Code: code, Error: "x"})); got != want {
			t.Errorf("refusal %q stops the client: %v, want %v", code, got, want)
		}
	}
}
