package hub_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/pipe"
)

// exchange checks that bytes cross a session both ways.
func exchange(t *testing.T, inlet, outlet *net.TCPConn, msg string) {
	t.Helper()
	for _, c := range []struct{ from, to *net.TCPConn }{{inlet, outlet}, {outlet, inlet}} {
		if _, err := c.from.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c.to, got); err != nil || string(got) != msg {
			t.Fatalf("read %q, %v; want %q", got, err, msg)
		}
	}
}

// TestShutdownLetsSessionsFinish: a hub shutting down gracefully refuses
// new connections, tells its agents it is going away (their control links
// end with ErrHubGoingAway), relays the sessions it has until they end
// cleanly, and only then returns.
func TestShutdownLetsSessionsFinish(t *testing.T) {
	relayModes(t, func(t *testing.T, hub hub.HubOptions) {
		h := testhub.Start(t, testhub.Options{Hub: hub})
		core, logs := observer.New(zapcore.InfoLevel)
		enroll := func(relays ...string) *testhub.Agent {
			a, err := h.Connect(t, testhub.AgentOptions{Logger: zap.New(core),
				Ticket: h.Ticket(t, authority.TicketOptions{Relays: relays})})
			if err != nil {
				t.Fatal(err)
			}
			return a
		}
		out, in := enroll("svc"), enroll()
		sessions := answer(out)
		claim(t, out, "svc")
		inlet, _ := dialData(t, in, "svc")
		outlet := next(t, sessions).conn
		exchange(t, inlet, outlet, "before")

		done := make(chan error, 1)
		go func() { done <- h.Relay().Shutdown(context.Background()) }()
		if !testhub.WaitFor(wait, func() bool {
			return logs.FilterMessage("the hub is shutting down; reconnecting").Len() == 2
		}) {
			t.Errorf("the agents did not both hear that the hub goes away; they logged %v", logs.All())
		}
		if c, err := net.DialTimeout("tcp", h.Addr, wait); err == nil {
			c.Close()
			t.Error("the hub accepted a connection while shutting down")
		}
		exchange(t, inlet, outlet, "during the shutdown")
		select {
		case err := <-done:
			t.Fatalf("Shutdown returned (%v) while a session was relayed", err)
		case <-time.After(100 * time.Millisecond):
		}
		for _, c := range []*net.TCPConn{inlet, outlet} {
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range []*net.TCPConn{inlet, outlet} {
			if rest, err := io.ReadAll(c); err != nil || len(rest) > 0 {
				t.Errorf("after both FINs, read %q, %v; want a clean end", rest, err)
			}
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Shutdown: %v, want nil once the sessions ended", err)
			}
		case <-time.After(wait):
			t.Fatal("Shutdown did not return once the last session ended")
		}
		if err := h.StopWithin(stopBound); err != nil {
			t.Error(err)
		}
	})
}

// TestShutdownTimeoutResets: sessions still relayed when Shutdown's
// context ends are reset.
func TestShutdownTimeoutResets(t *testing.T) {
	relayModes(t, func(t *testing.T, hub hub.HubOptions) {
		h := testhub.Start(t, testhub.Options{Hub: hub})
		inlet, outlet := session(t, h)
		exchange(t, inlet, outlet, "ping")
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := h.Relay().Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown: %v, want context.DeadlineExceeded", err)
		}
		for name, c := range map[string]*net.TCPConn{"inlet": inlet, "outlet": outlet} {
			if _, err := io.ReadAll(c); !pipe.IsReset(err) {
				t.Errorf("the %s's data connection ended with %v, want a reset", name, err)
			}
		}
	})
}

// TestGoAwayReconnects: agents told that the hub goes away reconnect to
// the hub that replaces it without waiting for their link to time out.
func TestGoAwayReconnects(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	a := h.Enroll(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := h.Relay().Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	h.Restart(t)
	if !testhub.WaitFor(wait, func() bool { return a.Client.Status().Connected }) {
		t.Fatalf("the agent did not reconnect: %+v", a.Client.Status())
	}
}
