package daemon

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/portal"
	"github.com/sluicehq/sluice/agent/relay"
)

// publishTimeout bounds one publication of the outlets' policies.
const publishTimeout = 10 * time.Second

// publishOutlets tells the hub the --allow policies of outlets, so that it
// refuses dials to this agent's relays from nodes none of them allows
// (docs/hub.md). The outlets still check their own policies. A failure is
// logged, not returned: the relay client publishes the list again on every
// reconnection, and an older hub that does not take it filters nothing.
func (a *Agent) publishOutlets(ctx context.Context, outlets []portal.OutletSpec) {
	exprs := make([]string, 0, len(outlets))
	for _, o := range outlets {
		exprs = append(exprs, o.Allow)
	}
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	err := a.client.PublishPolicies(ctx, exprs)
	switch {
	case err == nil:
	case errors.Is(err, relay.ErrNotConnected):
		a.log.Debug("outlet policies will be published when the hub is reachable", zap.Error(err))
	case errors.Is(err, relay.ErrRefused):
		a.log.Info("the hub does not take outlet policies (it is older than this agent): it lets every dial through", zap.Error(err))
	default:
		a.log.Warn("publishing outlet policies to the hub failed; it filters dials with the last list it got", zap.Error(err))
	}
}
