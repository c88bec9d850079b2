package loader_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/maps"
	"github.com/sluicehq/sluice/testenv"
)

// TestDatapathInNamespace runs the programs on a real bridge with two
// containers: the allowed one reaches the agent's listener at the service
// address, the other is refused at once, a foreign TC program on the same
// veth keeps running through attach, restart and cleanup, a restarted
// agent adopts the same links, and cleanup leaves no pins or links.
func TestDatapathInNamespace(t *testing.T) {
	host, app, other, opts := bridgeHost(t, loader.Options{})

	foreign := attachForeign(t, host, app.Veth)
	d := openAttach(t, host, opts, app.Veth, other.Veth)
	m := allowApp(t, host, d, app)
	ln := transparentListener(t, host, m)

	t.Run("allowed app reaches the agent at the service address", func(t *testing.T) {
		roundTrip(t, app, ln)
	})
	t.Run("other container refused at once", func(t *testing.T) {
		expectRefused(t, other)
	})
	t.Run("foreign program still runs", func(t *testing.T) {
		foreign.expectCounting(t, app)
	})
	before := d.Attachments()
	t.Run("no agent listening: refused", func(t *testing.T) {
		ln.Close()
		expectRefused(t, app)
		c, err := m.Counters.Read(portal)
		if err != nil {
			t.Fatal(err)
		}
		if c.Steered < 1 || c.NoListener < 1 || c.Refused < 2 {
			t.Errorf("counters %+v: want steered, refused and no_listener counted", c)
		}
	})
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	t.Run("agent gone, pins stay: still refused", func(t *testing.T) {
		expectRefused(t, app)
	})

	d = openAttach(t, host, opts)
	t.Run("restart adopts the same links", func(t *testing.T) {
		after := d.Attachments()
		if len(after) != len(before) {
			t.Fatalf("after restart %d attachments, before %d: %+v", len(after), len(before), after)
		}
		links := map[int]uint32{}
		for _, a := range before {
			links[a.Ifindex] = a.Link
		}
		for _, a := range after {
			if links[a.Ifindex] != a.Link || a.Link == 0 {
				t.Errorf("%s: link %d after restart, %d before", a.Device, a.Link, links[a.Ifindex])
			}
		}
		ln := transparentListener(t, host, maps.New(d.Maps()))
		roundTrip(t, app, ln)
		foreign.expectCounting(t, app)
	})
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	t.Run("cleanup leaves the foreign program only", func(t *testing.T) {
		if err := host.Do(func() error { return loader.Cleanup(opts) }); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(opts.PinDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin directory still there: %v", err)
		}
		for _, dev := range []string{"br0", app.Veth, other.Veth} {
			n := len(tcxPrograms(t, host, dev))
			want := 0
			if dev == app.Veth {
				want = 1
			}
			if n != want {
				t.Errorf("%s: %d TCX programs after cleanup, want %d", dev, n, want)
			}
		}
		foreign.expectCounting(t, app)
	})
}

// bridgeHost builds a host with bridge br0 and two containers on it, app
// (10.10.0.2) and other (10.10.0.3), and a pin directory of the test's own,
// cleaned up after it.
func bridgeHost(t testing.TB, opts loader.Options) (host *testenv.NS, app, other *testenv.Container, _ loader.Options) {
	t.Helper()
	e := testenv.NewT(t)
	host, err := e.Namespace("host")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Bridge(host, "br0", "10.10.0.1/24"); err != nil {
		t.Fatal(err)
	}
	if app, err = e.Container(host, "br0", "app", "10.10.0.2/24", "10.10.0.1"); err != nil {
		t.Fatal(err)
	}
	if other, err = e.Container(host, "br0", "other", "10.10.0.3/24", "10.10.0.1"); err != nil {
		t.Fatal(err)
	}
	opts.PinDir = filepath.Join("/sys/fs/bpf", "sluice-test-"+e.RunID())
	t.Cleanup(func() {
		if err := host.Do(func() error { return loader.Cleanup(opts) }); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return host, app, other, opts
}

// allowApp makes svc a service that only app may use: app's address is
// bound to its host-side veth, as the agent does.
func allowApp(t testing.TB, host *testenv.NS, d *loader.Datapath, app *testenv.Container) *maps.Set {
	t.Helper()
	m := maps.New(d.Maps())
	if err := m.Services.Put(maps.Service{Addr: svc, Portal: portal}); err != nil {
		t.Fatal(err)
	}
	idx := uint32(vethIndex(t, host, app))
	addr := netip.MustParseAddr(app.Addr)
	if err := m.Endpoints.Replace(map[maps.Endpoint]uint32{{Ifindex: idx, Addr: addr}: appW}); err != nil {
		t.Fatal(err)
	}
	if err := m.Bindings.Replace(map[netip.Addr]uint32{addr: idx}); err != nil {
		t.Fatal(err)
	}
	if err := m.Verdicts.Replace([]maps.Verdict{{Workload: appW, Portal: portal}}); err != nil {
		t.Fatal(err)
	}
	return m
}

// openAttach opens the data path inside host and attaches it to br0 and
// the given ports.
func openAttach(t testing.TB, host *testenv.NS, opts loader.Options, ports ...string) *loader.Datapath {
	t.Helper()
	var d *loader.Datapath
	err := host.Do(func() error {
		var err error
		if d, err = loader.Open(opts); err != nil {
			return err
		}
		for i, dev := range append([]string{"br0"}, ports...) {
			ifc, err := net.InterfaceByName(dev)
			if err != nil {
				return err
			}
			role := loader.Port
			if i == 0 {
				role = loader.Bridge
			}
			if err := d.Attach(ifc.Index, role); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("open data path: %v", err)
	}
	return d
}

// vethIndex is the ifindex of app's host-side veth.
func vethIndex(t testing.TB, host *testenv.NS, app *testenv.Container) int {
	t.Helper()
	var idx int
	if err := host.Do(func() error {
		ifi, err := net.InterfaceByName(app.Veth)
		if err == nil {
			idx = ifi.Index
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return idx
}

// transparentListener listens as the agent does and publishes its address.
func transparentListener(t testing.TB, host *testenv.NS, m *maps.Set) *net.TCPListener {
	t.Helper()
	var ln *net.TCPListener
	err := host.Do(func() error {
		var err error
		if ln, err = loader.ListenTransparent(); err != nil {
			return err
		}
		return m.Listener.Set(ln.Addr().(*net.TCPAddr).AddrPort())
	})
	if err != nil {
		t.Fatalf("transparent listener: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// roundTrip connects from c to the service and checks that the listener
// gets the connection with the service as its local address.
func roundTrip(t *testing.T, c *testenv.Container, ln *net.TCPListener) {
	t.Helper()
	accepted := make(chan net.Conn, 1)
	go func() {
		a, err := ln.Accept()
		if err == nil {
			accepted <- a
		}
		close(accepted)
	}()
	conn, err := c.NS.DialTCP(context.Background(), svc.String(), 2*time.Second)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close()
	var a net.Conn
	select {
	case a = <-accepted:
	case <-time.After(2 * time.Second):
		t.Fatal("the agent's listener accepted nothing")
	}
	if a == nil {
		t.Fatal("accept failed")
	}
	defer a.Close()
	if got := a.LocalAddr().String(); got != svc.String() {
		t.Errorf("accepted local address %s, want the service %s", got, svc)
	}
	if got, want := a.RemoteAddr().String(), conn.LocalAddr().String(); got != want {
		t.Errorf("accepted remote address %s, want the app's %s", got, want)
	}
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	a.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(a, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("agent read %q, %v", buf, err)
	}
	if _, err := a.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("app read %q, %v", buf, err)
	}
}

// expectRefused checks that a connection to the service is reset at once.
func expectRefused(t *testing.T, c *testenv.Container) {
	t.Helper()
	start := time.Now()
	conn, err := c.NS.DialTCP(context.Background(), svc.String(), 3*time.Second)
	if err == nil {
		conn.Close()
		t.Fatal("connected; want refused")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("want connection refused, got %v after %v", err, time.Since(start))
	}
}

// foreignProg is another project's TC program on the same veth: it counts
// the packets it sees and passes them on.
type foreignProg struct {
	host    *testenv.NS
	counter *ebpf.Map
}

func attachForeign(t *testing.T, host *testenv.NS, dev string) *foreignProg {
	t.Helper()
	counter, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { counter.Close() })
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SchedCLS,
		License: "MIT",
		Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, counter.FD()),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.Mov.Imm(asm.R1, 1),
			asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, -1).WithSymbol("out"), // TC_ACT_UNSPEC: next
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	err = host.Do(func() error {
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifc.Index, Program: prog, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return err
		}
		t.Cleanup(func() { l.Close() })
		return nil
	})
	if err != nil {
		t.Fatalf("attach foreign program: %v", err)
	}
	return &foreignProg{host: host, counter: counter}
}

// expectCounting sends non-portal traffic from c and checks the foreign
// program saw it.
func (f *foreignProg) expectCounting(t *testing.T, c *testenv.Container) {
	t.Helper()
	var before, after uint64
	if err := f.counter.Lookup(uint32(0), &before); err != nil {
		t.Fatal(err)
	}
	if conn, err := c.NS.DialTCP(context.Background(), "10.10.0.1:9", time.Second); err == nil {
		conn.Close()
	}
	if err := f.counter.Lookup(uint32(0), &after); err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Errorf("foreign program saw no packet (%d -> %d)", before, after)
	}
}

func tcxPrograms(t *testing.T, host *testenv.NS, dev string) []link.AttachedProgram {
	t.Helper()
	var progs []link.AttachedProgram
	err := host.Do(func() error {
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		r, err := link.QueryPrograms(link.QueryOptions{Target: ifc.Index, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return err
		}
		progs = r.Programs
		return nil
	})
	if err != nil {
		t.Fatalf("query %s: %v", dev, err)
	}
	return progs
}

// TestClsactFallback runs the same path with the programs attached through
// clsact, as on kernels without TCX: steering, refusal, adoption by a
// restarted agent, and cleanup of our filters only.
func TestClsactFallback(t *testing.T) {
	host, app, other, opts := bridgeHost(t, loader.Options{NoTCX: true})
	d := openAttach(t, host, opts, app.Veth, other.Veth)
	for _, a := range d.Attachments() {
		if a.Hook != "clsact/ingress" {
			t.Errorf("%s attached at %s, want clsact/ingress", a.Device, a.Hook)
		}
	}
	m := allowApp(t, host, d, app)
	roundTrip(t, app, transparentListener(t, host, m))
	expectRefused(t, other)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	d = openAttach(t, host, opts)
	if n := len(d.Attachments()); n != 3 {
		t.Errorf("restarted agent adopted %d clsact filters, want 3 (bridge and two ports)", n)
	}
	roundTrip(t, app, transparentListener(t, host, maps.New(d.Maps())))
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := host.Do(func() error { return loader.Cleanup(opts) }); err != nil {
		t.Fatal(err)
	}
	out, err := host.Run(context.Background(), "tc", "filter", "show", "dev", app.Veth, "ingress")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "sluice_") {
		t.Errorf("our filter is still on %s after cleanup:\n%s", app.Veth, out)
	}
}
