package portal_test

import (
	"errors"
	"io"
	"net"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/pipe"
	"github.com/sluicehq/sluice/agent/portal"
)

// TestPortalRegistry: the Manager lists the inlets that have a portal
// number, in the order they were added, and forgets one with its inlet.
func TestPortalRegistry(t *testing.T) {
	m := portal.New(portal.Options{Hub: noHub{}})
	t.Cleanup(func() { m.Close() })
	spec := func(name, from string) portal.InletSpec {
		return portal.InletSpec{Name: name, From: from, Via: "db", Allow: "postgres-outlet", Transparent: true, AllowLocal: "true"}
	}
	b, a, c := spec("b", "10.200.0.2:5432"), spec("a", "10.200.0.1:5432"), spec("c", "10.200.0.3:5432")
	for _, s := range []portal.InletSpec{b, a, c} {
		if _, err := m.AddInlet(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.SetPortal("missing", 3); !errors.Is(err, portal.ErrNotFound) {
		t.Errorf("SetPortal on a missing inlet: %v, want ErrNotFound", err)
	}
	if err := errors.Join(m.SetPortal("a", 2), m.SetPortal("b", 1)); err != nil {
		t.Fatal(err)
	}
	want := []portal.NumberedInlet{{Spec: b, Number: 1}, {Spec: a, Number: 2}}
	if got := m.Portals(); !reflect.DeepEqual(got, want) {
		t.Errorf("Portals() = %+v, want %+v (c has no number)", got, want)
	}
	if err := m.RemoveInlet("b"); err != nil {
		t.Fatal(err)
	}
	if got := m.Portals(); !reflect.DeepEqual(got, want[1:]) {
		t.Errorf("Portals() after removing b = %+v, want %+v", got, want[1:])
	}
}

// TestAcceptTransparent: the transparent listener's accept loop asks admit
// about each connection; a refused one is reset before any inlet sees it,
// an admitted one is served by the inlet of its service as the workload
// admit names; the loop ends when the listener closes.
func TestAcceptTransparent(t *testing.T) {
	s := newStandard(t, nil, "")
	svc := newFakeSteer(t)
	s.in.inlet(t, portal.InletSpec{Name: "tp", From: svc.addr, Via: "web", Allow: "web-outlet",
		Transparent: true, AllowLocal: "has(app)"})
	var mu sync.Mutex
	allow := false
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.in.m.AcceptTransparent(svc.ln, func(c *net.TCPConn, serve func(uint32)) error {
			mu.Lock()
			defer mu.Unlock()
			if !allow {
				return errors.New("not this workload")
			}
			serve(7)
			return nil
		})
	}()
	// A reset, which on loopback may beat connect(2) home.
	if c, err := net.Dial("tcp4", svc.addr); err != nil {
		if !pipe.IsReset(err) {
			t.Fatalf("dial: %v, want a reset", err)
		}
	} else {
		defer c.Close()
		c.SetDeadline(time.Now().Add(wait))
		if got, err := io.ReadAll(c); len(got) != 0 || !pipe.IsReset(err) {
			t.Errorf("a refused connection read %q, %v; want a reset", got, err)
		}
	}
	if got := s.in.inletCounters(t, "tp").Accepted; got != 0 {
		t.Errorf("the inlet accepted %d connections that admit refused", got)
	}
	mu.Lock()
	allow = true
	mu.Unlock()
	app := dial(t, svc.addr)
	echo(t, app, "admitted")
	if n := s.in.m.CloseConns("tp", func(c portal.ConnInfo) bool { return c.Workload != 7 }); n != 1 {
		t.Errorf("CloseConns found %d connections of workload 7, want 1", n)
	}
	svc.ln.Close()
	<-done
}
