package portal_test

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"

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
		{"allow-local without transparent", func(s *portal.InletSpec) { s.Transparent, s.From = false, "127.0.0.1:0" }, "add --transparent"},
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
