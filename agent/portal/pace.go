package portal

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/relay"
)

// Pacing. The hub refuses a node's dial requests past its limits
// (relay.ErrRateLimited: each node's token bucket, the cap on its sessions
// waiting for their data connections). An inlet that gets that refusal asks
// again after a pause drawn with full jitter from a window that doubles
// from paceMin to paceMax, for at most hubPaceWait: a burst of new
// connections (a pool opening a thousand at once) is delayed, not reset.
// Past hubPaceWait the connection fails with the hub's refusal.
const (
	paceMin = 10 * time.Millisecond
	paceMax = time.Second
)

// hubPaceWait is a variable so that a test can shorten it.
var hubPaceWait = 20 * time.Second

// dialHub asks the hub for a data session to in's relay, with a direct
// path from port if not 0 (direct.go), waiting and asking again while the
// hub says to slow down.
func (m *Manager) dialHub(in *inlet, port int) (relay.Dialed, error) {
	deadline := time.Now().Add(hubPaceWait)
	window := paceMin
	for {
		ctx, cancel := context.WithTimeout(in.ctx, m.opts.HandshakeTimeout)
		var (
			d   relay.Dialed
			err error
		)
		if dh, ok := m.opts.Hub.(DirectHub); ok && port != 0 {
			d, err = dh.DialPort(ctx, in.spec.Via, port)
		} else {
			d.Token, d.Owner, err = m.opts.Hub.Dial(ctx, in.spec.Via)
		}
		cancel()
		if !errors.Is(err, relay.ErrRateLimited) {
			return d, err
		}
		pause := rand.N(window) + time.Millisecond
		if time.Now().Add(pause).After(deadline) {
			return relay.Dialed{}, fmt.Errorf("%w (asked for %v)", err, hubPaceWait)
		}
		if ok, n := m.pace.Allow(time.Now()); ok {
			m.log.Warn("hub asks this node to slow down: new connections wait",
				zap.String("inlet", in.spec.Name), zap.Error(err), zap.Int64("more_not_logged", n))
		}
		t := time.NewTimer(pause)
		select {
		case <-in.ctx.Done():
			t.Stop()
			return relay.Dialed{}, fmt.Errorf("dial relay %q: %w", in.spec.Via, in.ctx.Err())
		case <-t.C:
		}
		window = min(2*window, paceMax)
	}
}
