package portal_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/pipe"
	"github.com/sluicehq/sluice/agent/portal"
)

// fakeSteer stands in for the kernel: it accepts on a plain listener, whose
// address plays the service address, and hands connections to the manager
// as the agent's transparent listener does.
type fakeSteer struct {
	ln   *net.TCPListener
	addr string
}

func newFakeSteer(t *testing.T) *fakeSteer {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &fakeSteer{ln: ln, addr: ln.Addr().String()}
}

// connect dials the service and serves the accepted side as workload.
func (f *fakeSteer) connect(t *testing.T, m *portal.Manager, workload uint32) *net.TCPConn {
	t.Helper()
	app := dial(t, f.addr)
	c, err := f.ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	m.ServeTransparent(c, workload)
	return app
}

func TestTransparentInletSpecs(t *testing.T) {
	m := portal.New(portal.Options{})
	t.Cleanup(func() { m.Close() })
	good := portal.InletSpec{Name: "pg", From: "10.200.0.10:5432", Via: "db", Allow: "postgres-outlet",
		Transparent: true, AllowLocal: `app == "analytics"`}
	for _, c := range []struct {
		name string
		edit func(*portal.InletSpec)
		hint string
	}{
		{"host name", func(s *portal.InletSpec) { s.From = "postgres:5432" }, "IPv4 address and port"},
		{"any address", func(s *portal.InletSpec) { s.From = "0.0.0.0:5432" }, "not 0.0.0.0"},
		{"IPv6", func(s *portal.InletSpec) { s.From = "[fd00::1]:5432" }, "not IPv6"},
		{"port 0", func(s *portal.InletSpec) { s.From = "10.200.0.10:0" }, "port other than 0"},
		{"no port", func(s *portal.InletSpec) { s.From = "10.200.0.10" }, "--from"},
		{"no allow-local", func(s *portal.InletSpec) { s.AllowLocal = "" }, "--allow-local is required"},
		{"bad allow-local", func(s *portal.InletSpec) { s.AllowLocal = "app ==" }, "--allow-local"},
		{"explicit allow-local on port 0", func(s *portal.InletSpec) { s.Transparent, s.From = false, "127.0.0.1:0" }, "port other than 0"},
		{"explicit allow-local on a host name", func(s *portal.InletSpec) { s.Transparent, s.From = false, "localhost:15432" }, "IPv4 address of this host (or 0.0.0.0)"},
		{"explicit allow-local without the data path", func(s *portal.InletSpec) { s.Transparent, s.From = false, "127.0.0.1:15999" }, "needs the agent's BPF data path"},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := good
			c.edit(&spec)
			_, err := m.AddInlet(spec)
			if !errors.Is(err, portal.ErrInvalid) || !strings.Contains(err.Error(), c.hint) {
				t.Fatalf("AddInlet(%+v): %v, want ErrInvalid mentioning %q", spec, err, c.hint)
			}
		})
	}
	info, err := m.AddInlet(good)
	if err != nil || info.Listening != "transparent 10.200.0.10:5432" {
		t.Fatalf("AddInlet(good) = %+v, %v", info, err)
	}
	dup := good
	dup.Name = "pg2"
	if _, err := m.AddInlet(dup); !errors.Is(err, portal.ErrExists) || !strings.Contains(err.Error(), `"pg"`) {
		t.Errorf("second inlet for the same service: %v, want ErrExists naming pg", err)
	}
}

func TestTransparentInletCarriesAndCloses(t *testing.T) {
	s := newStandard(t, nil, "")
	svc := newFakeSteer(t)
	s.in.inlet(t, portal.InletSpec{Name: "tp", From: svc.addr, Via: "web", Allow: "web-outlet",
		Transparent: true, AllowLocal: "has(app)"})
	a7 := svc.connect(t, s.in.m, 7)
	echo(t, a7, "from workload seven")
	a8 := svc.connect(t, s.in.m, 8)
	echo(t, a8, "from workload eight")

	if n := s.in.m.CloseConns("tp", func(c portal.ConnInfo) bool { return c.Workload != 7 }); n != 1 {
		t.Errorf("CloseConns reset %d connections, want 1", n)
	}
	if _, err := io.ReadAll(a7); !pipe.IsReset(err) {
		t.Errorf("workload 7's connection ended with %v, want a reset", err)
	}
	echo(t, a8, "still allowed")
	if n := s.in.m.CloseConns("nope", func(portal.ConnInfo) bool { return false }); n != 0 {
		t.Errorf("CloseConns on a missing inlet = %d", n)
	}
	if got := s.in.inletCounters(t, "tp").Accepted; got != 2 {
		t.Errorf("accepted %d, want 2", got)
	}
}

func TestTransparentWithoutInletIsReset(t *testing.T) {
	s := newStandard(t, nil, "")
	other := newFakeSteer(t)
	app := other.connect(t, s.in.m, 1)
	refused(t, app)
	if got := s.in.inletCounters(t, "web"); got != (portal.CounterValues{}) {
		t.Errorf("the explicit inlet counted %+v for a connection it never saw", got)
	}
}

// TestExplicitInletLocalPolicy: an explicit inlet with --allow-local asks
// Options.Local about each connection; a refused one is reset and counted
// refused, an admitted one is served as the workload Local names.
func TestExplicitInletLocalPolicy(t *testing.T) {
	var mu sync.Mutex
	admitted := map[string]uint32{}
	allow := false
	m := portal.New(portal.Options{Hub: noHub{}, Local: func(inlet string, c *net.TCPConn, serve func(uint32)) error {
		mu.Lock()
		defer mu.Unlock()
		if !allow {
			return errors.New("not this workload")
		}
		admitted[c.RemoteAddr().String()] = 9 // the workload the kernel would have found
		serve(9)
		return nil
	}})
	t.Cleanup(func() { m.Close() })
	info, err := m.AddInlet(portal.InletSpec{Name: "pg", From: "127.0.0.1:0", Via: "db", Allow: "postgres-outlet"})
	if err != nil {
		t.Fatal(err)
	}
	m.RemoveInlet("pg") // only to learn a free port: --allow-local needs a fixed one
	spec := portal.InletSpec{Name: "pg", From: info.Listening, Via: "db", Allow: "postgres-outlet", AllowLocal: `app == "analytics"`}
	if _, err := m.AddInlet(spec); err != nil {
		t.Fatal(err)
	}
	// The reset may beat connect(2) home on loopback: either way, a reset.
	if c, err := net.Dial("tcp4", spec.From); err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("dial: %v, want a reset", err)
		}
	} else {
		refused(t, c.(*net.TCPConn))
	}
	ins := m.Inlets()
	if c := ins[0].Counters; c.Accepted != 1 || c.Refused != 1 || c.RefusedLocal != 1 {
		t.Errorf("counters after a refused connection %+v, want accepted 1 refused 1, by --allow-local 1", c)
	}
	mu.Lock()
	allow = true
	mu.Unlock()
	// Admitted, it is served (and reset at once, since no hub is here: on
	// loopback even before connect(2) returns).
	if app, err := net.Dial("tcp4", spec.From); err == nil {
		defer app.Close()
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("dial: %v", err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(admitted)
		mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the admitted connection was not served")
		}
	}
}

// noHub has no relay: every channel fails.
type noHub struct{}

func (noHub) Dial(context.Context, string) ([]byte, string, error) {
	return nil, "", errors.New("no hub here")
}

func (noHub) OpenData(context.Context, []byte) (*net.TCPConn, error) {
	return nil, errors.New("no hub here")
}
