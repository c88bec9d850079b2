package portal_test

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/portal"
)

// TestWarmIdle: a warm channel closes after Options.WarmIdle; with a
// negative WarmIdle no channel stays warm, and every connection opens one.
func TestWarmIdle(t *testing.T) {
	for _, idle := range []time.Duration{200 * time.Millisecond, -1} {
		t.Run(idle.String(), func(t *testing.T) {
			h := testhub.Start(t, testhub.Options{})
			tg := newTarget(t, func(b []byte) []byte { return b })
			out := newNode(t, h, portal.Options{}, map[string]string{"web-outlet": "true"}, "web")
			out.outlet(t, portal.OutletSpec{Name: "web", To: tg.addr, Allow: "web-inlet"})
			in := newNode(t, h, portal.Options{WarmIdle: idle}, map[string]string{"web-inlet": "true"})
			addr := in.inlet(t, portal.InletSpec{Name: "web", Via: "web", Allow: "web-outlet"})
			info := func() portal.InletInfo { return in.m.Inlets()[0] }
			for range 2 {
				if got, err := roundTrip(dial(t, addr), []byte("x")); err != nil || string(got) != "x" {
					t.Fatalf("connection: %q, %v", got, err)
				}
				tg.end(t)
				if idle < 0 {
					time.Sleep(50 * time.Millisecond)
					if w := info().Warm; w != 0 {
						t.Fatalf("%d warm channels with warm channels off", w)
					}
					continue
				}
				if !testhub.WaitFor(wait, func() bool { return info().Warm == 1 }) {
					t.Fatalf("no warm channel after a clean end: %+v", info())
				}
				if !testhub.WaitFor(wait, func() bool { return info().Warm == 0 }) {
					t.Fatalf("the warm channel outlived WarmIdle: %+v", info())
				}
			}
			if n := info().Channels; n != 2 {
				t.Errorf("%d channels opened for 2 connections, want 2: none was reused", n)
			}
		})
	}
}
