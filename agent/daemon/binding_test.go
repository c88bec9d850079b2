package daemon

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/portal"
)

var (
	appAddr = netip.MustParseAddr("10.10.0.2")
	appVeth = containerVeth{Ifindex: 11, Name: "veth-app", Addrs: []netip.Addr{appAddr}}
	// A neighbour that added the app's address to its own interface.
	spoofer = containerVeth{Ifindex: 12, Name: "veth-spoof", Addrs: []netip.Addr{netip.MustParseAddr("10.10.0.3"), appAddr}}
	other   = containerVeth{Ifindex: 13, Name: "veth-other", Addrs: []netip.Addr{netip.MustParseAddr("10.10.0.4")}}
)

func TestBindNew(t *testing.T) {
	b, err := bindNew(appAddr, []containerVeth{other, appVeth})
	if err != nil || *b != (Binding{Ifindex: 11, Interface: "veth-app"}) {
		t.Errorf("one interface with the address: %v, %v", b, err)
	}
	if _, err := bindNew(appAddr, []containerVeth{other}); !errors.Is(err, ErrAddressNotFound) {
		t.Errorf("no interface with the address: %v, want ErrAddressNotFound", err)
	}
	_, err = bindNew(appAddr, []containerVeth{appVeth, spoofer})
	if !errors.Is(err, ErrAddressAmbiguous) || !strings.Contains(err.Error(), "veth-app, veth-spoof") {
		t.Errorf("two interfaces with the address: %v, want ErrAddressAmbiguous naming both", err)
	}
}

func set(idx ...int) map[int]bool {
	m := map[int]bool{}
	for _, i := range idx {
		m[i] = true
	}
	return m
}

func TestFollowBinding(t *testing.T) {
	bound := &Binding{Ifindex: 11, Interface: "veth-app"}
	restarted := containerVeth{Ifindex: 20, Name: "veth-app2", Addrs: []netip.Addr{appAddr}}
	scanned := 0
	view := func(present, before map[int]bool, veths ...containerVeth) hostView {
		return hostView{Present: present, Before: before, Veths: func() ([]containerVeth, error) { scanned++; return veths, nil }}
	}
	for _, c := range []struct {
		name     string
		cur      *Binding
		suspects map[int]bool
		h        hostView
		want     *Binding
		suspect  map[int]bool // suspects kept
		why      string       // part of the reason; "" if bound
	}{
		{name: "bound interface exists: kept, though a neighbour claims the address",
			cur: bound, h: view(set(11, 12), set(11, 12), appVeth, spoofer), want: bound},
		{name: "interfaces unknown: kept",
			cur: bound, h: view(nil, nil, spoofer), want: bound},
		{name: "vanished, only the neighbour that existed before has it: unbound",
			cur: bound, h: view(set(12), set(11, 12), spoofer), suspect: set(11, 12), why: "veth-app vanished; waiting for a new container interface"},
		{name: "vanished, the restarted container's new interface has it: rebound",
			cur: bound, h: view(set(12, 20), set(11, 12), spoofer, restarted), want: &Binding{Ifindex: 20, Interface: "veth-app2"}},
		{name: "unbound with suspects: a new interface appears",
			suspects: set(11, 12), h: view(set(12, 20), set(12), spoofer, restarted), want: &Binding{Ifindex: 20, Interface: "veth-app2"}},
		{name: "unbound with suspects: still only the neighbour",
			suspects: set(11, 12), h: view(set(12), set(12), spoofer), suspect: set(11, 12), why: "waiting for a new container interface"},
		{name: "vanished, two new interfaces have it: not guessing",
			cur: bound, h: view(set(20, 21), set(11), restarted, containerVeth{Ifindex: 21, Name: "veth-x", Addrs: []netip.Addr{appAddr}}),
			suspect: set(11), why: "several container interfaces have address 10.10.0.2 (veth-app2, veth-x)"},
		{name: "never bound (a file from before bindings): exactly one",
			h: view(set(11, 13), nil, appVeth, other), want: &Binding{Ifindex: 11, Interface: "veth-app"}},
		{name: "never bound: two",
			h: view(set(11, 12), nil, appVeth, spoofer), why: "several container interfaces"},
		{name: "never bound: none",
			h: view(set(13), nil, other), why: "no container interface has address 10.10.0.2"},
		{name: "scan failed: unbound, nothing guessed",
			h: hostView{Present: set(11), Veths: func() ([]containerVeth, error) { return nil, errors.New("boom") }}, why: "cannot read the containers' addresses: boom"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, suspects, why := followBinding(appAddr, c.cur, c.suspects, c.h)
			if !reflect.DeepEqual(got, c.want) || !reflect.DeepEqual(suspects, c.suspect) {
				t.Errorf("followBinding = %v, suspects %v; want %v, suspects %v", got, suspects, c.want, c.suspect)
			}
			if (c.why == "") != (why == "") || !strings.Contains(why, c.why) {
				t.Errorf("reason %q, want one with %q", why, c.why)
			}
		})
	}
	scanned = 0
	followBinding(appAddr, bound, nil, view(set(11), set(11), appVeth))
	if scanned != 0 {
		t.Error("a bound workload whose interface exists made the agent read every namespace")
	}
}

// fakeSys is a host whose interfaces and container addresses a test sets.
type fakeSys struct {
	mu     sync.Mutex
	veths  []containerVeth
	extra  []int // interfaces that are no container's
	addrs  []netip.Addr
	failed error
}

func (f *fakeSys) set(veths ...containerVeth) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.veths = veths
}

func (f *fakeSys) system() system {
	return system{
		Interfaces: func() ([]int, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			out := append([]int{1}, f.extra...)
			for _, v := range f.veths {
				out = append(out, v.Ifindex)
			}
			return out, nil
		},
		ContainerVeths: func() ([]containerVeth, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			return append([]containerVeth(nil), f.veths...), f.failed
		},
		HostAddrs: func() ([]netip.Addr, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			return append([]netip.Addr(nil), f.addrs...), nil
		},
	}
}

// TestAddressWorkloadBinding follows a workload named by address through
// the agent: bound at creation, kept against a neighbour that claims its
// address, unbound when its container goes, rebound to the restarted
// container only, saved, and restored on restart.
func TestAddressWorkloadBinding(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	dir := t.TempDir()
	a := start(t, dir, h.Ticket(t, authority.TicketOptions{}))
	fs := &fakeSys{}
	k := &fakeKernel{}
	a.dp.mu.Lock()
	a.dp.kern, a.dp.sys = k, fs.system()
	a.dp.mu.Unlock()
	w := Workload{Name: "app", Address: appAddr.String(), Attributes: map[string]string{"app": "analytics"}}

	if _, err := a.CreateWorkload(w); !errors.Is(err, ErrAddressNotFound) || !errors.Is(err, ErrInvalidWorkload) {
		t.Errorf("create with no container having the address: %v, want ErrAddressNotFound and ErrInvalidWorkload", err)
	}
	fs.set(appVeth, spoofer)
	if _, err := a.CreateWorkload(w); !errors.Is(err, ErrAddressAmbiguous) {
		t.Errorf("create with two containers having the address: %v, want ErrAddressAmbiguous", err)
	}
	fs.set(appVeth, other)
	lie := w
	lie.Bound = &Binding{Ifindex: 13, Interface: "veth-other"} // the caller cannot say where it lives
	info, err := a.CreateWorkload(lie)
	if err != nil || !reflect.DeepEqual(info.Bound, &Binding{Ifindex: 11, Interface: "veth-app"}) {
		t.Fatalf("CreateWorkload = %+v, %v; want bound to veth-app", info, err)
	}
	wantBound := func(ifindex int) {
		t.Helper()
		p := k.last()
		ep := endpoint{Ifindex: uint32(ifindex), Addr: appAddr}
		if p.Endpoints[ep] != info.Number || p.Bindings[appAddr] != uint32(ifindex) || len(p.Bindings) != 1 {
			t.Errorf("plan: endpoints %v bindings %v; want %v and the address bound to %d", p.Endpoints, p.Bindings, ep, ifindex)
		}
	}
	wantBound(11)

	// A neighbour claims the address: nothing moves.
	fs.set(appVeth, other, spoofer)
	a.dp.refresh()
	wantBound(11)

	// The app's container goes; only the neighbour has the address.
	fs.set(other, spoofer)
	a.dp.refresh()
	if p := k.last(); len(p.Bindings) != 0 || len(p.Endpoints) != 0 {
		t.Errorf("after the bound interface vanished: endpoints %v bindings %v; want none", p.Endpoints, p.Bindings)
	}
	ws := a.Workloads()
	// Why: the interface vanished (said at the refresh that saw it go) and
	// what it waits for (said by every later refresh, which the agent's own
	// loops may run meanwhile).
	if len(ws) != 1 || ws[0].Bound != nil || !strings.Contains(ws[0].Unresolved, "waiting for a new container interface with address "+appAddr.String()) {
		t.Errorf("Workloads() = %+v; want app unbound and why", ws)
	}
	a.dp.refreshHost()
	if p := k.last(); len(p.Bindings) != 0 {
		t.Errorf("the neighbour that was there before inherited the binding: %v", p.Bindings)
	}

	// The container is back, behind a new veth.
	back := containerVeth{Ifindex: 30, Name: "veth-app2", Addrs: []netip.Addr{appAddr}}
	fs.set(other, spoofer, back)
	a.dp.refreshHost()
	wantBound(30)
	if ws := a.Workloads(); ws[0].Unresolved != "" || ws[0].Bound.Interface != "veth-app2" {
		t.Errorf("Workloads() after the container came back: %+v", ws)
	}
	a.Close()

	// Restarted, the binding comes back from workloads.json.
	b := start(t, dir, "")
	defer b.Close()
	if ws := b.Workloads(); len(ws) != 1 || !reflect.DeepEqual(ws[0].Bound, &Binding{Ifindex: 30, Interface: "veth-app2"}) {
		t.Errorf("workloads after restart: %+v", ws)
	}
}

// TestWorkloadsFileWithoutBindings restores a workloads.json written before
// bindings existed: the workload is bound at the first sync with the data
// path, if exactly one container has its address.
func TestWorkloadsFileWithoutBindings(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	dir := t.TempDir()
	ticket := h.Ticket(t, authority.TicketOptions{})
	if err := os.WriteFile(filepath.Join(dir, workloadsFile), []byte(`[{"name": "app", "address": "10.10.0.2", "attributes": {"app": "analytics"}}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	a := start(t, dir, ticket)
	defer a.Close()
	fs := &fakeSys{}
	fs.set(appVeth, spoofer)
	k := &fakeKernel{}
	a.dp.mu.Lock()
	a.dp.kern, a.dp.sys = k, fs.system()
	a.dp.mu.Unlock()
	a.dp.refresh()
	if ws := a.Workloads(); ws[0].Bound != nil || !strings.Contains(ws[0].Unresolved, "several") {
		t.Errorf("two containers with the address: %+v; want unbound", ws)
	}
	fs.set(appVeth)
	a.dp.refreshHost()
	if ws := a.Workloads(); !reflect.DeepEqual(ws[0].Bound, &Binding{Ifindex: 11, Interface: "veth-app"}) {
		t.Errorf("one container with the address: %+v; want bound to it", ws)
	}
	data, err := os.ReadFile(filepath.Join(dir, workloadsFile))
	if err != nil || !strings.Contains(string(data), `"interface": "veth-app"`) {
		t.Errorf("workloads.json does not keep the binding (%v):\n%s", err, data)
	}
}

// TestExplicitInletAllowLocal: an explicit inlet with --allow-local needs
// the data path; with it, its host addresses become services passed
// unmarked, and a connection is served only for a workload the policy
// permits, as the kernel recorded it; the others are reset and counted.
func TestExplicitInletAllowLocal(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	a := start(t, t.TempDir(), h.Ticket(t, authority.TicketOptions{}))
	defer a.Close()
	spec := portal.InletSpec{Name: "pg", From: "127.0.0.1:0", Via: "postgres", Allow: "postgres-outlet", AllowLocal: `app == "analytics"`}
	if _, err := a.CreateInlet(spec); !errors.Is(err, portal.ErrInvalid) || !strings.Contains(err.Error(), "port other than 0") {
		t.Errorf("explicit inlet with --allow-local on port 0: %v", err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	spec.From = ln.Addr().String()
	ln.Close()
	if _, err := a.CreateInlet(spec); !errors.Is(err, ErrNoDatapath) || !strings.Contains(err.Error(), "admits anyone who can reach") {
		t.Errorf("explicit inlet with --allow-local without the data path: %v, want ErrNoDatapath saying what it would allow", err)
	}
	if len(a.Inlets()) != 0 {
		t.Errorf("inlet listening after the refusal: %+v", a.Inlets())
	}

	fs := &fakeSys{}
	fs.set(appVeth)
	k := &fakeKernel{flows: map[[2]netip.AddrPort]uint32{}}
	a.dp.mu.Lock()
	a.dp.kern, a.dp.sys = k, fs.system()
	a.dp.mu.Unlock()
	if _, err := a.CreateWorkload(Workload{Name: "app", Address: appAddr.String(), Attributes: map[string]string{"app": "analytics"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateInlet(spec); err != nil {
		t.Fatal(err)
	}
	listen := netip.MustParseAddrPort(spec.From)
	p := k.last()
	n := p.Services[listen]
	if n == 0 || !p.Explicit[n] || p.Inlets["pg"] != n || !p.allows(1, n) || p.allows(0, n) {
		t.Fatalf("plan for the explicit inlet: %+v", p)
	}
	st := a.Datapath()
	if len(st.Portals) != 1 || st.Portals[0] != (PortalStatus{Inlet: "pg", Kind: "explicit", Service: spec.From, Portal: n}) {
		t.Errorf("Datapath().Portals = %+v", st.Portals)
	}

	// The kernel recorded no workload for this connection (as for one from
	// the host itself): the unknown workload, which the policy refuses.
	// The reset may beat connect(2) home on loopback: either way a reset.
	c, err := net.Dial("tcp4", spec.From)
	if err == nil {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("a connection of the unknown workload: %v, want a reset", err)
	}
	if got := a.Inlets()[0].Counters.Refused; got != 1 {
		t.Errorf("refused counter %d, want 1", got)
	}
	// The policy change path: deleting the workload leaves nobody allowed.
	if err := a.DeleteWorkload("app"); err != nil {
		t.Fatal(err)
	}
	if p := k.last(); p.allows(1, n) {
		t.Errorf("after deleting the workload the plan still allows it")
	}
}
