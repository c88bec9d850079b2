package relay

import (
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/sluicehq/sluice/agent/wire"
)

// ErrHubGoingAway means the hub is shutting down: it said so before it
// closed the control connection, or refused a dial with code "going_away";
// the agent moves to another hub (or reconnects to this one's successor)
// at once.
var ErrHubGoingAway = wire.ErrGoingAway

// Reconnection. The wait before each attempt is drawn at random, with full
// jitter: after n failures in a row it is uniform in [0, min(cap,
// base·2^n)) (https://aws.amazon.com/builders-library/timeouts-retries-and-backoff-with-jitter/).
// Agents that lost a hub at the same moment (it restarted, it went away)
// then come back spread over the interval, not all at the same moments:
// the first attempt after a hub is lost comes within 250ms, so a thousand
// agents that lose their hub reach the others at about 4 a millisecond.
const (
	retryBase = 250 * time.Millisecond
	retryCap  = 5 * time.Second
)

// retry draws the waits between reconnection attempts.
type retry struct{ failures int }

// next is the wait before the next attempt; each call counts a failure.
func (r *retry) next() time.Duration {
	ceiling := min(retryCap, retryBase<<min(r.failures, 16))
	r.failures++
	return rand.N(ceiling)
}

// reset starts over after a connection succeeded.
func (r *retry) reset() { r.failures = 0 }

// noLongerMember reports whether the hub refused the node because it is no
// longer a member: revoked, or unknown to the authority (removed, or the
// hub's database replaced). Retrying cannot help.
func noLongerMember(err error) bool {
	var h *HubError
	return errors.As(err, &h) && (errors.Is(err, wire.ErrMemberRevoked) || errors.Is(err, wire.ErrNotMember))
}

// ending is how a client stopped for good; its zero value is a client
// that has not.
type ending struct {
	once sync.Once
	ch   chan struct{}

	mu  sync.Mutex // guards err
	err error
}

func (e *ending) done() chan struct{} {
	e.once.Do(func() { e.ch = make(chan struct{}) })
	return e.ch
}

// finish records why the client stopped and closes done.
func (e *ending) finish(err error) {
	e.mu.Lock()
	e.err = err
	e.mu.Unlock()
	close(e.done())
}

func (e *ending) reason() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// Done is closed when the client has stopped for good because the hub
// said this node is no longer a member (revoked, or removed): it does not
// reconnect, and Err says why. Cancelling Start's context does not close
// it.
func (c *Client) Done() <-chan struct{} { return c.end.done() }

// Err is why the client stopped (Done), or nil. It matches
// wire.ErrMemberRevoked or wire.ErrNotMember.
func (c *Client) Err() error { return c.end.reason() }
