package portal_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/portal"
	"github.com/sluicehq/sluice/agent/relay"
)

// flood is one node's dial requests to a relay, as fast as 16 goroutines
// can make them.
type flood struct {
	dials, rateLimited, denied, accepted atomic.Int64
	other                                atomic.Pointer[error]
}

func (f *flood) run(ctx context.Context, a *testhub.Agent, relayName string, min int64, done <-chan struct{}) {
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				select {
				case <-done:
					if f.dials.Load() >= min {
						return
					}
				default:
				}
				_, _, err := a.Client.Dial(ctx, relayName)
				f.dials.Add(1)
				switch {
				case err == nil:
					f.accepted.Add(1)
				case errors.Is(err, relay.ErrRateLimited):
					f.rateLimited.Add(1)
				case errors.Is(err, relay.ErrDialDenied):
					f.denied.Add(1)
				case ctx.Err() == nil:
					f.other.Store(&err)
				}
			}
		}()
	}
	wg.Wait()
}

// openAll opens n connections through the inlet at once and keeps each
// open until all have their answer, so that each needs a channel, and a
// data session, of its own.
func openAll(t *testing.T, addr string, n int) error {
	var wg sync.WaitGroup
	var answered sync.WaitGroup
	answered.Add(n)
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok := false
			defer func() {
				if !ok {
					answered.Done()
				}
			}()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(wait))
			msg := fmt.Appendf(nil, "connection %d", i)
			if _, err := c.Write(msg); err != nil {
				errs <- err
				return
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil {
				errs <- fmt.Errorf("connection %d: %w", i, err)
				return
			}
			if !bytes.Equal(got, bytes.ToUpper(msg)) {
				errs <- fmt.Errorf("connection %d: answer %q", i, got)
				return
			}
			ok = true
			answered.Done()
			answered.Wait()
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// TestDialFlood: a member with no right to the outlet floods the hub with
// dial requests to its relay while another member opens 20 new connections
// through it: all 20 succeed; the hub refuses the flood (rate_limited, and
// dial_denied where the outlet's agent published its policies) and counts
// it; the outlet's agent never has more data sessions pending than its cap.
func TestDialFlood(t *testing.T) {
	const (
		flooded = 20000
		legit   = 20
	)
	for _, published := range []bool{true, false} {
		t.Run(fmt.Sprintf("published=%v", published), func(t *testing.T) {
			h := testhub.Start(t, testhub.Options{})
			tg := newTarget(t, bytes.ToUpper)
			outOpts := portal.Options{MaxPending: 48, MaxPendingPerNode: 24}
			out := newNode(t, h, outOpts, map[string]string{"web-outlet": "true"}, "web")
			out.outlet(t, portal.OutletSpec{Name: "web", To: tg.addr, Allow: "web-inlet"})
			if published {
				if err := out.Client.PublishPolicies(t.Context(), []string{"web-inlet"}); err != nil {
					t.Fatal(err)
				}
			}
			in := newNode(t, h, portal.Options{}, map[string]string{"web-inlet": "true"})
			inletAddr := in.inlet(t, portal.InletSpec{Name: "web", Via: "web", Allow: "web-outlet"})
			flooder := h.Enroll(t, nil)

			ctx, cancel := context.WithTimeout(t.Context(), 3*wait)
			defer cancel()
			var f flood
			legitDone := make(chan struct{})
			flooding := make(chan struct{})
			go func() {
				defer close(flooding)
				f.run(ctx, flooder, "web", flooded, legitDone)
			}()
			// Half the flood first: without limits, by then the outlet's
			// agent has opened thousands of data connections.
			if !testhub.WaitFor(2*wait, func() bool { return f.dials.Load() >= flooded/2 }) {
				t.Fatalf("the flood made only %d dials", f.dials.Load())
			}
			err := openAll(t, inletAddr, legit)
			during := f.dials.Load()
			close(legitDone)
			<-flooding
			if err != nil {
				t.Errorf("connections during the flood: %v", err)
			}
			if e := f.other.Load(); e != nil {
				t.Errorf("the flood got an unexpected error: %v", *e)
			}
			st, inc := h.Relay().Stats(), out.m.Incoming()
			t.Logf("flood: %d dials (%d when the %d connections were done): %d accepted, %d rate_limited, %d dial_denied; hub refusals %+v; outlet incoming %+v",
				f.dials.Load(), during, legit, f.accepted.Load(), f.rateLimited.Load(), f.denied.Load(), st.Refused, inc)
			if f.rateLimited.Load() == 0 || st.Refused.DialRate+st.Refused.DialPendingNode != f.rateLimited.Load() {
				t.Errorf("the flooder got %d rate_limited refusals, the hub counted %d (rate) + %d (pending); want some, and all counted",
					f.rateLimited.Load(), st.Refused.DialRate, st.Refused.DialPendingNode)
			}
			if published && (f.accepted.Load() != 0 || f.denied.Load() == 0 || st.Refused.DialPolicy != f.denied.Load()) {
				t.Errorf("with policies published, the flooder got %d sessions and %d dial_denied refusals (hub counted %d); want none and some, all counted",
					f.accepted.Load(), f.denied.Load(), st.Refused.DialPolicy)
			}
			if !published && inc.Dropped+inc.RateLimited == 0 {
				t.Errorf("outlet incoming %+v: without published policies the flood must reach the outlet's caps", inc)
			}
			if inc.PendingPeak > outOpts.MaxPending {
				t.Errorf("the outlet had %d data sessions pending at once, over its cap of %d", inc.PendingPeak, outOpts.MaxPending)
			}
		})
	}
}

// TestBurstIsPaced: an honest burst over the hub's and the outlet's limits
// is delayed, never reset. The hub allows the inlet's node 20 data sessions
// a second, 5 at once, and 4 waiting for their connections; the outlet 3
// pending from one node and 10 a second. 60 connections opened at once all
// get their answer: the inlet waits and asks again when the hub says to
// slow down (rate_limited), the outlet waits for room.
func TestBurstIsPaced(t *testing.T) {
	const n = 60
	h := testhub.Start(t, testhub.Options{Hub: hub.HubOptions{Limits: hub.Limits{DialRate: 20, DialBurst: 5, PendingPerNode: 4}}})
	tg := newTarget(t, bytes.ToUpper)
	out := newNode(t, h, portal.Options{MaxPendingPerNode: 3, IncomingRate: 10, IncomingBurst: 5}, map[string]string{"web-outlet": "true"}, "web")
	out.outlet(t, portal.OutletSpec{Name: "web", To: tg.addr, Allow: "web-inlet"})
	in := newNode(t, h, portal.Options{}, map[string]string{"web-inlet": "true"})
	inletAddr := in.inlet(t, portal.InletSpec{Name: "web", Via: "web", Allow: "web-outlet"})
	if err := openAll(t, inletAddr, n); err != nil {
		t.Fatalf("a burst of %d connections: %v", n, err)
	}
	st, inc := h.Relay().Stats(), out.m.Incoming()
	t.Logf("hub refusals %+v; outlet incoming %+v", st.Refused, inc)
	if st.Refused.DialRate+st.Refused.DialPendingNode == 0 {
		t.Errorf("the hub refused no dial: the burst did not test pacing (refusals %+v)", st.Refused)
	}
	if inc.Dropped+inc.RateLimited != 0 {
		t.Errorf("the outlet dropped pushes of an honest burst: %+v", inc)
	}
}
