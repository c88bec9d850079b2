package portal

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/relay"
)

// slowDownHub answers every dial with the hub's rate_limited refusal.
type slowDownHub struct{ dials atomic.Int64 }

func (h *slowDownHub) Dial(context.Context, string) ([]byte, string, error) {
	h.dials.Add(1)
	return nil, "", relay.ErrRateLimited
}

func (h *slowDownHub) OpenData(context.Context, []byte) (*net.TCPConn, error) {
	return nil, errors.New("no data session was granted")
}

// TestPacingIsBounded: a hub that never stops saying "slow down" (a flooded
// or hostile one) holds a connection at most hubPaceWait: the inlet asks
// again a few times, spaced out, then fails with the hub's refusal; and a
// connection whose inlet is deleted meanwhile stops waiting at once.
func TestPacingIsBounded(t *testing.T) {
	defer func(d time.Duration) { hubPaceWait = d }(hubPaceWait)
	hubPaceWait = 300 * time.Millisecond
	hub := &slowDownHub{}
	m := &Manager{opts: Options{Hub: hub, HandshakeTimeout: time.Second}, log: zap.NewNop()}
	in := &inlet{spec: InletSpec{Name: "web", Via: "web"}, ctx: context.Background()}
	start := time.Now()
	_, err := m.dialHub(in, 0)
	took := time.Since(start)
	if !errors.Is(err, relay.ErrRateLimited) {
		t.Fatalf("pacing against a hub that always refuses: %v, want relay.ErrRateLimited", err)
	}
	if took > 2*time.Second {
		t.Errorf("pacing held the connection %v, past its bound of %v", took, hubPaceWait)
	}
	if n := hub.dials.Load(); n < 2 || n > 60 {
		t.Errorf("%d dials in %v: want a few, spaced out (at least 10 ms apart)", n, took)
	}

	hubPaceWait = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	in = &inlet{spec: InletSpec{Name: "web", Via: "web"}, ctx: ctx}
	done := make(chan error, 1)
	go func() { _, err := m.dialHub(in, 0); done <- err }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("pacing for a deleted inlet: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pacing went on after its inlet was deleted")
	}
}
