package hub

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/sluicehq/sluice/agent/relay"
)

// A hub stops either at once (Serve's context: every connection is reset)
// or gracefully (Shutdown):
//
//	Shutdown ──> listeners closed: the kernel refuses new connections
//	         ──> every agent told "goaway", then its control connection
//	             closed (also any that finishes its hello meanwhile): agents
//	             reconnect at once, to the hub that takes this one's place
//	         ──> data sessions relay on until they end, or ctx is done
//	         ──> Serve's context cancelled: what is left is reset, Serve returns

// drainPoll is how often Shutdown looks for sessions to tell and whether
// the relayed ones have ended.
const drainPoll = 50 * time.Millisecond

// draining is the state of a graceful shutdown.
type draining struct {
	mu       sync.Mutex // guards the following
	started  bool
	serving  []serving         // one per Serve call
	told     map[*session]bool // control sessions sent a goaway
	relaying int               // data sessions being relayed
}

// serving is a Serve call: its listener and the cancel of its context.
type serving struct {
	ln     net.Listener
	cancel context.CancelFunc
}

// serve registers a Serve call; false if Shutdown has begun.
func (d *draining) serve(ln net.Listener, cancel context.CancelFunc) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started {
		return false
	}
	d.serving = append(d.serving, serving{ln, cancel})
	return true
}

func (d *draining) isStarted() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.started
}

// relay counts a data session relayed until the returned func is called.
func (d *draining) relay() (end func()) {
	d.mu.Lock()
	d.relaying++
	d.mu.Unlock()
	return func() {
		d.mu.Lock()
		d.relaying--
		d.mu.Unlock()
	}
}

// Shutdown stops the hub gracefully: it stops accepting connections,
// tells every connected agent that it is going away and closes their
// control connections, and lets the data sessions it relays go on until
// they end or ctx is done. Then it cancels Serve's context, which resets
// what is left, and returns ctx's error if it had to. Serve returns once
// every connection is closed.
func (h *Hub) Shutdown(ctx context.Context) error {
	d := &h.drain
	d.mu.Lock()
	d.started = true
	if d.told == nil {
		d.told = map[*session]bool{}
	}
	serving := d.serving
	d.mu.Unlock()
	for _, s := range serving {
		s.ln.Close()
	}
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	var err error
	for !h.drained() && err == nil {
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-tick.C:
		}
	}
	for _, s := range serving {
		s.cancel()
	}
	return err
}

// drained tells the control sessions that have not heard it yet that the
// hub is going away, and reports whether none is left and no data session
// is relayed.
func (h *Hub) drained() bool {
	h.mu.Lock()
	sessions := make([]*session, 0, len(h.sessions))
	for s := range h.sessions {
		sessions = append(sessions, s)
	}
	h.mu.Unlock()
	d := &h.drain
	d.mu.Lock()
	var tell []*session
	for _, s := range sessions {
		if !d.told[s] {
			d.told[s] = true
			tell = append(tell, s)
		}
	}
	relaying := d.relaying
	d.mu.Unlock()
	for _, s := range tell {
		// A session still in its hello is closed at once: its agent
		// reconnects as it would after a goaway.
		s.push(&relay.Message{Op: relay.OpGoAway})
		s.closeAfterPushes()
	}
	return len(sessions) == 0 && relaying == 0
}
