package portal_test

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/pipe"
	"github.com/sluicehq/sluice/agent/portal"
)

// TestDeathResetsStreams: when the inlet's agent, the outlet's agent or the
// hub dies (SIGKILL, as a crash) in the middle of a stream, both the app and
// the target see a reset, never a clean end: the kernel closes a dead
// process's sockets with a FIN unless they are armed (pipe.Arm). The one
// that dies runs in a process of its own.
func TestDeathResetsStreams(t *testing.T) {
	for _, who := range []string{"inlet", "outlet", "hub"} {
		for _, download := range []bool{true, false} {
			name := who + "/upload"
			if download {
				name = who + "/download"
			}
			t.Run(name, func(t *testing.T) { deathTrial(t, who, download) })
		}
	}
}

// streamEnd is how one side's read of a stream ended.
type streamEnd struct {
	n   int64
	err error
}

func deathTrial(t *testing.T, who string, download bool) {
	var (
		h    *testhub.Hub
		kill func()
	)
	if who == "hub" {
		p := testhub.StartProcess(t, testhub.ProcessOptions{})
		h, kill = p.Hub, p.Kill
	} else {
		h = testhub.Start(t, testhub.Options{})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	outletAttrs, inletAttrs := map[string]string{"role": "outlet"}, map[string]string{"role": "inlet"}
	outlet := portal.OutletSpec{Name: "o", To: ln.Addr().String(), Allow: `role == "inlet"`}
	if who == "outlet" {
		p := startProcess(t, h, processConfig{Ticket: h.Ticket(t, authority.TicketOptions{Attributes: outletAttrs, Relays: []string{"r"}}),
			Relays: []string{"r"}, Outlet: &outlet})
		kill = p.kill
	} else {
		newNode(t, h, portal.Options{}, outletAttrs, "r").outlet(t, outlet)
	}
	inlet := portal.InletSpec{Name: "i", From: "127.0.0.1:0", Via: "r", Allow: `role == "outlet"`}
	var addr string
	if who == "inlet" {
		p := startProcess(t, h, processConfig{Ticket: h.Ticket(t, authority.TicketOptions{Attributes: inletAttrs}), Inlet: &inlet})
		addr, kill = p.listening, p.kill
	} else {
		addr = newNode(t, h, portal.Options{}, inletAttrs).inlet(t, inlet)
	}

	app, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(wait))
	target, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	sender, receiver := net.Conn(app), target
	if download {
		sender, receiver = target, app
	}
	// Linux reports a reset once, to the first of a socket's reader and
	// writer to ask; the other then sees the stream's end (EOF, EPIPE). So
	// a side saw the reset if either did.
	writeErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 32<<10)
		for {
			if _, err := sender.Write(buf); err != nil {
				writeErr <- err
				return
			}
		}
	}()
	var received atomic.Int64
	ends := map[string]chan streamEnd{"app": make(chan streamEnd, 1), "target": make(chan streamEnd, 1)}
	for name, c := range map[string]net.Conn{"app": app, "target": target} {
		go func() {
			c.SetReadDeadline(time.Now().Add(3 * wait))
			var n int64
			buf := make([]byte, 32<<10)
			for {
				k, err := c.Read(buf)
				n += int64(k)
				if c == receiver {
					received.Add(int64(k))
				}
				if err != nil {
					ends[name] <- streamEnd{n, err}
					return
				}
			}
		}()
	}
	if !testhub.WaitFor(wait, func() bool { return received.Load() >= 1<<20 }) {
		t.Fatalf("only %d bytes crossed the portal", received.Load())
	}
	kill()
	for _, name := range []string{"app", "target"} {
		select {
		case e := <-ends[name]:
			var werr error
			if (name == "app") != download { // the sender
				select {
				case werr = <-writeErr:
				case <-time.After(wait):
					t.Errorf("the %s still writes", name)
				}
			}
			if !pipe.IsReset(e.err) && !pipe.IsReset(werr) {
				t.Errorf("the %s's stream ended without a reset (read %d bytes, then %v; write: %v): it looks complete", name, e.n, e.err, werr)
			}
		case <-time.After(4 * wait):
			t.Errorf("the %s's stream did not end", name)
		}
	}
}
