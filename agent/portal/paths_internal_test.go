package portal

import "testing"

// TestBreakOfAnEarlierTurn: a direct channel opened before the peer's
// latest turn to direct that breaks (a connection that was on the old path
// and took TCP_USER_TIMEOUT to say so) is old news; one opened in the
// current turn is not. The scenario test that needs this is
// TestDirectPathBehindNAT/FlushStrict: pgbench's connections on the
// forgotten flows broke 5.5 s after the flush, when the path had been made
// anew, and made the peer relayed again.
func TestBreakOfAnEarlierTurn(t *testing.T) {
	var p paths
	old, closeOld := p.opened("n", true, 0, nil)
	// The path broke (found at a warm channel's open); the peer is relayed.
	p.mu.Lock()
	p.peers["n"].direct, p.peers["n"].blocked = false, true // as relayed does
	p.mu.Unlock()
	_, closeRelayed := p.opened("n", false, 0, nil)
	if p.newerThan("n", old) {
		t.Fatalf("a relayed peer reports a newer direct turn than %d", old)
	}
	cur, closeCur := p.opened("n", true, 0, nil) // a background attempt made it anew
	if cur <= old {
		t.Fatalf("turn %d after turn %d: a turn to direct must count", cur, old)
	}
	if !p.newerThan("n", old) {
		t.Errorf("a channel of turn %d breaking would make the peer relayed although turn %d is direct", old, cur)
	}
	if p.newerThan("n", cur) {
		t.Errorf("a channel of the current turn %d breaking would be ignored", cur)
	}
	// A relayed channel past the attempts a peer may make at once, then a
	// direct one: the same turn, the path was not made anew.
	_, closeCapped := p.opened("n", false, 0, nil)
	if again, closeAgain := p.opened("n", true, 0, nil); again != cur {
		t.Errorf("turn %d after a relayed channel in turn %d: only a path made anew starts a turn", again, cur)
	} else {
		closeAgain()
	}
	for _, c := range []func(){closeOld, closeRelayed, closeCur, closeCapped} {
		c()
	}
}
