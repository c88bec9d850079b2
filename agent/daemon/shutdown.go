package daemon

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/relay"
)

// releaseTimeout bounds each relay's release at the hub during Drain.
const releaseTimeout = 5 * time.Second

// Drain stops the agent taking new connections and waits, until ctx is
// done, for the live ones to end (agent run's answer to SIGTERM):
//
//   - the transparent listener closes: the pinned programs refuse new
//     connections to transparent inlets in the kernel, as when no agent runs;
//   - explicit inlets stop listening, direct channels are not accepted;
//   - the relays are released at the hub, which refuses dials to them at
//     once (they are claimed again when the agent starts);
//   - live connections go on; warm channels close.
//
// The hub link stays up, so that revocations still reach the agent.
// It returns ctx's error if connections were still live; Close then
// resets them and stops the rest.
func (a *Agent) Drain(ctx context.Context) error {
	relays := a.conf.relays()
	errs := []error{a.dp.stopAccepting()}
	if a.direct != nil {
		a.direct.Close()
	}
	for _, r := range relays {
		rctx, cancel := context.WithTimeout(ctx, releaseTimeout)
		err := a.client.Release(rctx, r)
		cancel()
		if err != nil && !errors.Is(err, relay.ErrNotConnected) {
			errs = append(errs, err)
		}
	}
	a.log.Info("agent draining: no new connections; waiting for the live ones", zap.Int64("live", a.ports.Live()))
	errs = append(errs, a.ports.Drain(ctx))
	return errors.Join(errs...)
}

// Done is closed when the agent has stopped serving on its own, for good:
// the hub said this node is no longer a member (revoked, or removed); Err
// says why. The agent stays to be closed.
func (a *Agent) Done() <-chan struct{} { return a.client.Done() }

// Err is why Done is closed, or nil. It matches
// wire.ErrMemberRevoked or wire.ErrNotMember.
func (a *Agent) Err() error { return a.client.Err() }
