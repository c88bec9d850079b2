package portal_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/pipe"
)

// TestDrainLetsConnectionsFinish: an agent draining (either end) refuses
// new connections, carries its live ones until they end cleanly, closes
// its warm channels, and returns once the last one ended. The outlet's
// agent releases its relay first, as daemon.Agent.Drain does.
func TestDrainLetsConnectionsFinish(t *testing.T) {
	for _, end := range []string{"inlet", "outlet"} {
		t.Run(end, func(t *testing.T) {
			s := newStandard(t, nil, "")
			// A connection that ended leaves a warm channel behind.
			if got, err := roundTrip(dial(t, s.inletAddr), []byte("warm")); err != nil || string(got) != "WARM" {
				t.Fatalf("first connection: %q, %v", got, err)
			}
			s.tg.end(t)
			live := dial(t, s.inletAddr)
			echo(t, live, "before")
			n := s.in
			if end == "outlet" {
				n = s.out
				// As the daemon does first: dials to the relay are refused.
				if err := s.out.Client.Release(t.Context(), "web"); err != nil {
					t.Fatal(err)
				}
			}
			done := make(chan error, 1)
			go func() { done <- n.m.Drain(context.Background()) }()
			if end == "inlet" {
				if !testhub.WaitFor(wait, func() bool {
					c, err := net.Dial("tcp", s.inletAddr)
					if err == nil {
						c.Close()
					}
					return err != nil
				}) {
					t.Error("the draining inlet still accepts connections")
				}
			} else {
				testhub.WaitFor(time.Second, func() bool { return s.in.m.Inlets()[0].Warm == 0 })
				refusedAt(t, s.inletAddr, []byte("new"))
			}
			echo(t, live, "during the drain")
			select {
			case err := <-done:
				t.Fatalf("Drain returned (%v) with a connection live", err)
			case <-time.After(100 * time.Millisecond):
			}
			if got, err := roundTrip(live, []byte("last")); err != nil || string(got) != "LAST" {
				t.Errorf("the live connection's clean end: %q, %v; want LAST and EOF", got, err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Drain: %v", err)
				}
			case <-time.After(wait):
				t.Fatal("Drain did not return once the live connection ended")
			}
		})
	}
}

// TestDrainTimeoutResets: connections still live when Drain gives up are
// reset by Close.
func TestDrainTimeoutResets(t *testing.T) {
	s := newStandard(t, nil, "")
	c := dial(t, s.inletAddr)
	echo(t, c, "live")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := s.in.m.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drain: %v, want context.DeadlineExceeded", err)
	}
	if err := s.in.m.Close(); err != nil {
		t.Errorf("Close after Drain: %v", err)
	}
	if got, err := io.ReadAll(c); !pipe.IsReset(err) || !bytes.Equal(got, nil) {
		t.Errorf("the app's connection ended with %q, %v; want a reset", got, err)
	}
}

// TestDrainServesAnnouncedSessions: a data session the hub announces to a
// draining outlet agent (the inlet dialed before the relay was released)
// is served, not dropped for the inlet to wait out the hub's session
// timeout.
func TestDrainServesAnnouncedSessions(t *testing.T) {
	s := newStandard(t, nil, "")
	live := dial(t, s.inletAddr)
	echo(t, live, "live")
	done := make(chan error, 1)
	go func() { done <- s.out.m.Drain(context.Background()) }()
	time.Sleep(50 * time.Millisecond) // Drain has begun; the relay is still claimed
	late := dial(t, s.inletAddr)
	late.SetDeadline(time.Now().Add(3 * time.Second)) // well within the session timeout
	if got, err := roundTrip(late, []byte("late")); err != nil || string(got) != "LATE" {
		t.Errorf("a session announced during the drain: %q, %v; want it served", got, err)
	}
	if got, err := roundTrip(live, []byte("last")); err != nil || string(got) != "LAST" {
		t.Errorf("the live connection: %q, %v", got, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Drain: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Drain did not return")
	}
}
