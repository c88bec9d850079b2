package relay

import (
	"context"
	"errors"
	"slices"

	"github.com/sluicehq/sluice/agent/policy"
)

// PublishPolicies tells the hub the --allow expressions of this agent's
// outlets, now and after every reconnection, replacing what it published
// before. The hub then refuses a dial to this agent's relays from a node
// whose attributes none of them allows, so that such a node cannot make
// this agent open data connections for nothing; the outlets still check
// their own policies. An agent that never publishes gets every dial, as
// before; an empty list refuses them all (the agent has no outlet).
//
// Expressions that do not parse are left out (an outlet never has one);
// more than 64 distinct ones are published as "true", which filters
// nothing. If the hub is unreachable, the list is published when it is
// back, and the error says so (ErrNotConnected).
func (c *Client) PublishPolicies(ctx context.Context, exprs []string) error {
	list := publishable(exprs)
	c.mu.Lock()
	c.policies = list
	c.mu.Unlock()
	c.legs.kick() // the links to the other hubs publish them too
	return c.sendPolicies(ctx, list)
}

func (c *Client) sendPolicies(ctx context.Context, list []string) error {
	if _, err := c.request(ctx, &Message{Op: OpPolicies, Policies: list}); err != nil {
		return wrap(err, "publish outlet policies")
	}
	return nil
}

// publishable returns the distinct canonical forms of exprs, sorted; a
// non-nil slice, so that no outlet publishes an empty list.
func publishable(exprs []string) []string {
	out := []string{}
	for _, e := range exprs {
		p, err := policy.Parse(e)
		if err != nil {
			continue
		}
		out = append(out, p.Canonical())
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > MaxPublishedPolicies {
		return []string{"true"}
	}
	return out
}

// republish sends the published policies again on a new connection; an
// older hub that does not know them is not an error (it filters nothing).
func (c *Client) republish(ctx context.Context) error {
	c.mu.Lock()
	list := c.policies
	c.mu.Unlock()
	if list == nil {
		return nil
	}
	err := c.sendPolicies(ctx, list)
	if errors.Is(err, ErrRefused) {
		return nil
	}
	return err
}
