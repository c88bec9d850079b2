package relay

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"go.uber.org/zap"
)

// Relay names an agent wants, and whether it holds them now. A name is
// held from the hub's yes until the link drops or the hub says it gave the
// name to another connection (op "released"). A wanted name that is not
// held is claimed again on every connection, and, while connected, by
// claimLoop with a capped exponential backoff and jitter:
//
//	Claim ──ok──> held ──link lost──> wanted ──reconnect: claim──> held
//	                 └──released──> yielded ──claimLoop: claim if free──> held
//	ClaimLater / a refused re-claim ──> wanted ──claimLoop: claim──> held
//
// A name lost to another connection of this node (another agent with this
// identity, or this agent's own connection before a reconnection) is taken
// back only once it is free ("if_free"), so two agents with one identity
// never take a name from each other in turn.

// Claim retries, for names wanted but not held while connected.
const (
	claimRetryMin = 500 * time.Millisecond
	claimRetryMax = 30 * time.Second
)

// claim is the state of a relay name this agent wants.
type claim struct {
	held    bool
	err     error     // why it is not held; nil while held
	yielded bool      // lost to another connection of this node: claim it only if free
	retryAt time.Time // when claimLoop tries again
	backoff time.Duration
}

// ClaimStatus is a relay name this agent wants, as it stands at the hub.
type ClaimStatus struct {
	Name string `json:"name"`
	Held bool   `json:"held"`
	// Error says why it is not held; NextRetry is when the agent tries
	// again (zero while it waits for a connection to the hub).
	Error     string    `json:"error,omitempty"`
	NextRetry time.Time `json:"next_retry,omitzero"`
}

// Claim makes this agent the owner of a relay name at the hub, now and after
// every reconnection. A name it cannot claim is not kept.
func (c *Client) Claim(ctx context.Context, name string) error {
	if err := c.claimOnce(ctx, name, false); err != nil {
		return err
	}
	c.mu.Lock()
	c.claims[name] = &claim{held: true}
	c.mu.Unlock()
	c.legs.kick()
	return nil
}

// ClaimLater records a relay name to claim on the next connection, or, if
// connected, in the background with backoff: for a name an agent restores
// and could not claim now (cause says why, for Claims).
func (c *Client) ClaimLater(name string, cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := &claim{err: cause, backoff: claimRetryMin}
	cl.retryAt = time.Now().Add(Jitter(cl.backoff))
	if cl.err == nil {
		cl.err = ErrNotConnected
	}
	c.claims[name] = cl
}

// Release gives up a relay name.
func (c *Client) Release(ctx context.Context, name string) error {
	c.mu.Lock()
	delete(c.claims, name)
	c.mu.Unlock()
	c.legs.kick()
	if _, err := c.request(ctx, &Message{Op: OpRelease, Relay: name}); err != nil {
		return wrap(err, "release relay %q", name)
	}
	return nil
}

// Claims lists the relay names this agent wants, in name order.
func (c *Client) Claims() []ClaimStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]ClaimStatus, 0, len(c.claims))
	for name, cl := range c.claims {
		st := ClaimStatus{Name: name, Held: cl.held && c.conn != nil}
		if !st.Held {
			st.Error = "not connected to the hub"
			if cl.err != nil {
				st.Error = cl.err.Error()
			}
			if c.conn != nil {
				st.NextRetry = cl.retryAt
			}
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// claimOnce asks the hub for name; ifFree leaves it to another connection
// of this node that holds it.
func (c *Client) claimOnce(ctx context.Context, name string, ifFree bool) error {
	if _, err := c.request(ctx, &Message{Op: OpClaim, Relay: name, IfFree: ifFree}); err != nil {
		return wrap(err, "claim relay %q", name)
	}
	return nil
}

// reclaimAll claims every wanted name on a new connection: those this
// agent held before, even from a connection of its own the hub still has
// (the one it lost); those it yielded, only if free.
func (c *Client) reclaimAll(ctx context.Context) {
	c.mu.Lock()
	names := make(map[string]bool, len(c.claims))
	for n, cl := range c.claims {
		names[n] = cl.yielded
	}
	c.mu.Unlock()
	for n, ifFree := range names {
		if err := c.retryClaim(ctx, n, ifFree); err != nil {
			c.log.Warn("re-claiming relay failed; retrying", zap.String("relay", n), zap.Error(err))
		}
	}
}

// retryClaim claims a wanted name and records the outcome.
func (c *Client) retryClaim(ctx context.Context, name string, ifFree bool) error {
	err := c.claimOnce(ctx, name, ifFree)
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.claims[name]
	if cl == nil { // released meanwhile
		return nil
	}
	if err == nil {
		*cl = claim{held: true}
		return nil
	}
	cl.held, cl.err = false, err
	cl.backoff = min(max(cl.backoff*2, claimRetryMin), claimRetryMax)
	cl.retryAt = time.Now().Add(Jitter(cl.backoff))
	return err
}

// released is the hub's word that it gave name to another connection of
// this node: the name is no longer held, and is taken back when free.
func (c *Client) released(name, why string) {
	c.mu.Lock()
	cl := c.claims[name]
	if cl != nil {
		cl.held, cl.yielded = false, true
		cl.err = fmt.Errorf("relay %q: the hub gave it to another connection of this node (%s); taken back when that one lets it go: %w", name, why, ErrRelayTaken)
		cl.backoff = claimRetryMin
		cl.retryAt = time.Now().Add(Jitter(cl.backoff))
	}
	c.mu.Unlock()
	if cl != nil {
		c.log.Warn("relay name taken over by another connection of this node; is a second agent running with this identity?",
			zap.String("relay", name), zap.String("hub_says", why))
	}
}

// unheldLocked marks every name not held, after the link was lost.
func (c *Client) unheldLocked(cause error) {
	for _, cl := range c.claims {
		if cl.held {
			cl.held, cl.err = false, fmt.Errorf("link to the hub lost: %w", cause)
			cl.backoff = claimRetryMin
			cl.retryAt = time.Now().Add(Jitter(cl.backoff))
		}
	}
}

// claimLoop retries, while connected, the wanted names that are not held,
// each when its backoff ends, until ctx is done.
func (c *Client) claimLoop(ctx context.Context) {
	t := time.NewTicker(claimRetryMin / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		due := map[string]bool{}
		c.mu.Lock()
		if c.conn != nil {
			for n, cl := range c.claims {
				if !cl.held && !now.Before(cl.retryAt) {
					due[n] = cl.yielded
				}
			}
		}
		c.mu.Unlock()
		for n, ifFree := range due {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := c.retryClaim(cctx, n, ifFree)
			cancel()
			if err == nil {
				c.log.Info("relay claimed again", zap.String("relay", n))
			} else if !errors.Is(err, ErrNotConnected) {
				c.log.Debug("relay still not claimed", zap.String("relay", n), zap.Error(err))
			}
		}
	}
}
