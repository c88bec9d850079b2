package daemon

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/policy"
	"github.com/sluicehq/sluice/agent/portal"
)

func TestWorkloadSpecs(t *testing.T) {
	good := Workload{Name: "app", Address: "10.10.0.2", Attributes: map[string]string{"app": "analytics"}}
	if err := good.check(); err != nil {
		t.Fatalf("valid workload: %v", err)
	}
	if err := (&Workload{Name: "app", Interface: "veth1a2b3c"}).check(); err != nil {
		t.Fatalf("valid workload by interface: %v", err)
	}
	if err := (&Workload{Name: "app", Cgroup: "/sys/fs/cgroup/app.slice/app"}).check(); err != nil {
		t.Fatalf("valid workload by cgroup: %v", err)
	}
	for _, c := range []struct {
		name string
		edit func(*Workload)
		hint string
	}{
		{"bad name", func(w *Workload) { w.Name = "my app" }, "workload name"},
		{"no selector", func(w *Workload) { w.Address = "" }, "exactly one of --address IP, --interface DEV or --cgroup PATH"},
		{"two selectors", func(w *Workload) { w.Interface = "veth0" }, "exactly one"},
		{"address and cgroup", func(w *Workload) { w.Cgroup = "/sys/fs/cgroup/app" }, "exactly one"},
		{"all three", func(w *Workload) { w.Interface, w.Cgroup = "veth0", "/sys/fs/cgroup/app" }, "exactly one"},
		{"host name", func(w *Workload) { w.Address = "app.local" }, "IPv4 address"},
		{"IPv6", func(w *Workload) { w.Address = "fd00::2" }, "IPv4 address"},
		{"any address", func(w *Workload) { w.Address = "0.0.0.0" }, "IPv4 address"},
		{"interface too long", func(w *Workload) { w.Address, w.Interface = "", "a-very-long-device" }, "at most 15"},
		{"interface with slash", func(w *Workload) { w.Address, w.Interface = "", "a/b" }, "without /"},
		{"relative cgroup", func(w *Workload) { w.Address, w.Cgroup = "", "app.slice/app" }, "absolute, clean path"},
		{"unclean cgroup", func(w *Workload) { w.Address, w.Cgroup = "", "/sys/fs/cgroup/../app" }, "absolute, clean path"},
		{"cgroup root dir", func(w *Workload) { w.Address, w.Cgroup = "", "/" }, "cgroup v2 directory"},
		{"empty attribute name", func(w *Workload) { w.Attributes = map[string]string{"": "x"} }, "empty name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := good
			c.edit(&w)
			err := w.check()
			if !errors.Is(err, ErrInvalidWorkload) || errors.Is(err, portal.ErrInvalid) || !strings.Contains(err.Error(), c.hint) ||
				strings.Contains(err.Error(), "portal") {
				t.Errorf("check(%+v) = %v, want ErrInvalidWorkload (not a portal's) mentioning %q", w, err, c.hint)
			}
		})
	}
}

func TestComputePlan(t *testing.T) {
	pg := netip.MustParseAddrPort("10.200.0.10:5432")
	web := netip.MustParseAddrPort("10.200.0.11:80")
	inlet1 := netip.MustParseAddrPort("10.10.0.1:15432")
	inlet2 := netip.MustParseAddrPort("198.18.0.2:15432")
	inlets := []planInlet{
		{Name: "pg", Service: pg, Portal: 1, AllowLocal: policy.MustParse(`app == "analytics"`)},
		{Name: "web", Service: web, Portal: 2, AllowLocal: policy.MustParse(`not has(app)`)},
		// An explicit inlet on 0.0.0.0:15432: each host address, and one
		// that clashes with a transparent inlet's service.
		{Name: "explicit", Listen: []netip.AddrPort{inlet1, inlet2, web}, Explicit: true, Portal: 3, AllowLocal: policy.MustParse(`app == "analytics"`)},
	}
	workloads := []planWorkload{
		{Workload: Workload{Name: "analytics", Address: "10.10.0.2", Attributes: map[string]string{"app": "analytics"},
			Bound: &Binding{Ifindex: 11, Interface: "veth-app"}}, Number: 1},
		{Workload: Workload{Name: "billing", Interface: "vethb", Attributes: map[string]string{"app": "billing"}}, Number: 2},
		{Workload: Workload{Name: "bare", Interface: "gone"}, Number: 3},
		{Workload: Workload{Name: "jobs", Cgroup: "/cg/jobs", Attributes: map[string]string{"app": "analytics"}}, Number: 4},
		{Workload: Workload{Name: "idle", Cgroup: "/cg/idle", Attributes: map[string]string{"app": "analytics"}}, Number: 5},
		{Workload: Workload{Name: "lost", Cgroup: "/cg/lost"}, Number: 6},
		{Workload: Workload{Name: "moved", Address: "10.10.0.7", Attributes: map[string]string{"app": "analytics"}},
			Number: 7, Unbound: "its interface vethm vanished; waiting"},
	}
	r := resolvers{
		Ifindex: func(name string) (int, bool) { return map[string]int{"vethb": 12}[name], name == "vethb" },
		Cgroup: func(dir string) ([]int, error) {
			switch dir {
			case "/cg/jobs":
				return []int{21, 22}, nil // two containers
			case "/cg/idle":
				return nil, nil // no process yet
			}
			return nil, errors.New("no such cgroup")
		},
	}
	got := computePlan(inlets, workloads, r)
	want := plan{
		Services: map[netip.AddrPort]uint32{pg: 1, web: 2, inlet1: 3, inlet2: 3},
		// The address workload: its address on its bound interface only,
		// and the address bound there; the unbound one has neither.
		Endpoints: map[endpoint]uint32{
			{Ifindex: 11, Addr: netip.MustParseAddr("10.10.0.2")}: 1,
			{Ifindex: 12}: 2,
			{Ifindex: 21}: 4,
			{Ifindex: 22}: 4,
		},
		Bindings: map[netip.Addr]uint32{netip.MustParseAddr("10.10.0.2"): 11},
		// Unknown containers (0), "bare" and "lost" have no app attribute:
		// web only. "idle" and "moved" have their verdicts, waiting.
		Verdicts: []verdict{{Workload: 1, Portal: 1}, {Workload: 4, Portal: 1}, {Workload: 5, Portal: 1}, {Workload: 7, Portal: 1},
			{Workload: 0, Portal: 2}, {Workload: 3, Portal: 2}, {Workload: 6, Portal: 2},
			{Workload: 1, Portal: 3}, {Workload: 4, Portal: 3}, {Workload: 5, Portal: 3}, {Workload: 7, Portal: 3}},
		Denied:   map[uint32]bool{},
		Explicit: map[uint32]bool{3: true},
		Inlets:   map[string]uint32{"pg": 1, "web": 2, "explicit": 3},
		Unresolved: []string{
			"inlet explicit: 10.200.0.11:80 is already portal 2's service",
			"interface gone: not found",
			"cgroup /cg/idle: no process in a container",
			"cgroup /cg/lost: no such cgroup",
			"address 10.10.0.7: its interface vethm vanished; waiting",
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("computePlan =\n%+v\nwant\n%+v", got, want)
	}
	if !got.allows(1, 1) || got.allows(2, 1) || !got.allows(0, 2) || got.allows(0, 1) || !got.allows(1, 3) || got.allows(0, 3) {
		t.Errorf("allows disagrees with the verdicts %v", got.Verdicts)
	}
	inlets[0].Denied = true // its peer was revoked
	denied := computePlan(inlets, workloads, r)
	if !denied.Denied[1] || denied.allows(1, 1) || !denied.allows(0, 2) {
		t.Errorf("a denied inlet: Denied %v, allows(1,1) %v, allows(0,2) %v", denied.Denied, denied.allows(1, 1), denied.allows(0, 2))
	}
	if empty := computePlan(nil, nil, r); len(empty.Services)+len(empty.Endpoints)+len(empty.Verdicts)+len(empty.Bindings) != 0 {
		t.Errorf("empty configuration gave %+v", empty)
	}
}

// fakeKernel records what the agent writes, in place of the BPF data path.
type fakeKernel struct {
	mu      sync.Mutex
	plans   []plan
	resets  []uint32
	adopted map[netip.AddrPort]uint32    // what pinned maps held at start
	flows   map[[2]netip.AddrPort]uint32 // (src, dst) -> workload the steer program recorded
}

func (k *fakeKernel) apply(p plan) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.plans = append(k.plans, p)
	return nil
}

func (k *fakeKernel) resetCounters(n uint32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.resets = append(k.resets, n)
	return nil
}

func (k *fakeKernel) pinned() map[netip.AddrPort]uint32 { return k.adopted }

func (k *fakeKernel) takeFlow(src, dst netip.AddrPort) (uint32, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	w, ok := k.flows[[2]netip.AddrPort{src, dst}]
	delete(k.flows, [2]netip.AddrPort{src, dst})
	return w, ok, nil
}

func (k *fakeKernel) status(st *DatapathStatus) { st.Listener = "127.0.0.1:1" }
func (k *fakeKernel) Close() error              { return nil }

func (k *fakeKernel) last() plan {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.plans[len(k.plans)-1]
}

func TestTransparentInletsAndWorkloads(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	dir := t.TempDir()
	a := start(t, dir, h.Ticket(t, authority.TicketOptions{}))
	spec := portal.InletSpec{Name: "pg", From: "10.200.0.10:5432", Via: "postgres", Allow: "postgres-outlet",
		Transparent: true, AllowLocal: `app == "analytics"`}
	if _, err := a.CreateInlet(spec); !errors.Is(err, ErrNoDatapath) || !strings.Contains(err.Error(), "--datapath off") {
		t.Errorf("transparent inlet without the data path: %v, want ErrNoDatapath with the reason", err)
	}
	if _, err := a.CreateInlet(portal.InletSpec{Name: "explicit", From: "127.0.0.1:15999", Via: "postgres", Allow: "postgres-outlet",
		AllowLocal: `app == "analytics"`}); !errors.Is(err, ErrNoDatapath) {
		t.Errorf("explicit inlet with --allow-local without the data path: %v, want ErrNoDatapath", err)
	}
	if st := a.Datapath(); st.Enabled || !strings.Contains(st.Reason, "off") {
		t.Errorf("Datapath() = %+v, want off with a reason", st)
	}

	k := &fakeKernel{}
	fs := &fakeSys{}
	fs.set(appVeth)
	a.dp.mu.Lock()
	a.dp.kern, a.dp.sys = k, fs.system()
	a.dp.mu.Unlock()
	info, err := a.CreateInlet(spec)
	if err != nil || info.Listening != "transparent 10.200.0.10:5432" {
		t.Fatalf("CreateInlet = %+v, %v", info, err)
	}
	if len(k.resets) != 1 || k.resets[0] != 1 {
		t.Errorf("counters reset for portals %v, want [1]", k.resets)
	}
	svc := netip.MustParseAddrPort("10.200.0.10:5432")
	if p := k.last(); p.Services[svc] != 1 || len(p.Verdicts) != 0 {
		t.Errorf("plan after the inlet: %+v", p)
	}
	w, err := a.CreateWorkload(Workload{Name: "analytics", Address: "10.10.0.2", Attributes: map[string]string{"app": "analytics"}})
	if err != nil || w.Number != 1 {
		t.Fatalf("CreateWorkload = %+v, %v", w, err)
	}
	if _, err := a.CreateWorkload(Workload{Name: "again", Address: "10.10.0.2"}); !errors.Is(err, portal.ErrExists) {
		t.Errorf("second workload on one address: %v, want ErrExists", err)
	}
	if p := k.last(); !reflect.DeepEqual(p.Verdicts, []verdict{{Workload: 1, Portal: 1}}) {
		t.Errorf("verdicts after the workload: %v, want [{1 1}]", p.Verdicts)
	}
	st := a.Datapath()
	if !st.Enabled || len(st.Portals) != 1 || st.Portals[0] != (PortalStatus{Inlet: "pg", Kind: "transparent", Service: svc.String(), Portal: 1}) {
		t.Errorf("Datapath() = %+v", st)
	}
	if err := a.DeleteWorkload("analytics"); err != nil {
		t.Fatal(err)
	}
	if p := k.last(); len(p.Verdicts) != 0 || len(p.Endpoints) != 0 {
		t.Errorf("plan after deleting the workload: %+v", p)
	}
	if _, err := a.CreateWorkload(Workload{Name: "analytics", Address: "10.10.0.2", Attributes: map[string]string{"app": "analytics"}}); err != nil {
		t.Fatal(err)
	}
	a.Close()

	// Restarted with the data path off: workloads come back (renumbered),
	// the transparent inlet is kept but not run, and can be deleted.
	b := start(t, dir, "")
	defer b.Close()
	if ws := b.Workloads(); len(ws) != 1 || ws[0].Name != "analytics" || ws[0].Number != 1 {
		t.Errorf("workloads after restart: %+v", ws)
	}
	if ins := b.Inlets(); len(ins) != 1 || ins[0].State != StateFailed || !ins[0].NextRetry.IsZero() ||
		!strings.Contains(ins[0].Error, "needs the BPF data path") {
		t.Errorf("transparent inlet without the data path: %+v; want it kept, failed, not retried, saying why", ins)
	}
	if err := b.DeleteInlet("pg"); err != nil {
		t.Errorf("deleting the saved transparent inlet: %v", err)
	}
	if ins := b.Inlets(); len(ins) != 0 {
		t.Errorf("inlets after deleting it: %+v", ins)
	}
	if err := b.DeleteInlet("pg"); !errors.Is(err, portal.ErrNotFound) {
		t.Errorf("deleting it twice: %v, want ErrNotFound", err)
	}
}

func TestBadDatapathMode(t *testing.T) {
	d := &datapath{}
	if err := d.start(Options{Datapath: "maybe"}); err == nil || !strings.Contains(err.Error(), "want auto, on or off") {
		t.Errorf("startDatapath(maybe) = %v", err)
	}
}

// TestPortalNumbersSurviveRestart checks that an inlet whose service the
// pinned maps already knew takes its old portal number back, counters and
// all, and that a new inlet neither takes a number kept for a saved one nor
// inherits its counters.
func TestPortalNumbersSurviveRestart(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	a := start(t, t.TempDir(), h.Ticket(t, authority.TicketOptions{}))
	defer a.Close()
	kept := netip.MustParseAddrPort("10.200.0.10:5432")
	other := netip.MustParseAddrPort("10.200.0.11:5432")
	k := &fakeKernel{}
	a.dp.mu.Lock()
	a.dp.kern = k
	a.dp.adopted = map[netip.AddrPort]uint32{kept: 1, other: 2}
	a.dp.mu.Unlock()

	mk := func(name, from string) uint32 {
		t.Helper()
		_, err := a.CreateInlet(portal.InletSpec{Name: name, From: from, Via: "postgres", Allow: "postgres-outlet",
			Transparent: true, AllowLocal: "true"})
		if err != nil {
			t.Fatal(err)
		}
		return a.Datapath().Portals[len(a.Datapath().Portals)-1].Portal
	}
	if n := mk("pg", kept.String()); n != 1 || len(k.resets) != 0 {
		t.Errorf("adopted inlet got portal %d with resets %v, want 1 and no reset", n, k.resets)
	}
	if n := mk("new", "10.200.0.12:5432"); n != 3 || !reflect.DeepEqual(k.resets, []uint32{3}) {
		t.Errorf("new inlet got portal %d with resets %v, want 3 (2 is kept for 10.200.0.11) reset", n, k.resets)
	}
	if err := a.DeleteInlet("pg"); err != nil {
		t.Fatal(err)
	}
	if n := mk("pg-again", kept.String()); n != 1 || !reflect.DeepEqual(k.resets, []uint32{3, 1}) {
		t.Errorf("inlet re-created on a service got portal %d with resets %v, want 1 reset", n, k.resets)
	}
}

// TestCgroupWorkloadsRefresh checks that a workload named by cgroup is
// resolved through the resolver, and that refreshCgroups rewrites the maps
// when, and only when, the resolution changed.
func TestCgroupWorkloadsRefresh(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	a := start(t, t.TempDir(), h.Ticket(t, authority.TicketOptions{}))
	defer a.Close()
	var mu sync.Mutex
	veths := []int(nil)
	k := &fakeKernel{}
	a.dp.mu.Lock()
	a.dp.kern = k
	a.dp.resolveCgroup = func(dir string) ([]int, error) {
		mu.Lock()
		defer mu.Unlock()
		if dir != "/sys/fs/cgroup/jobs" {
			return nil, errors.New("no such cgroup")
		}
		return veths, nil
	}
	a.dp.mu.Unlock()
	setVeths := func(v ...int) {
		mu.Lock()
		defer mu.Unlock()
		veths = v
	}
	plans := func() int {
		k.mu.Lock()
		defer k.mu.Unlock()
		return len(k.plans)
	}

	w := Workload{Name: "jobs", Cgroup: "/sys/fs/cgroup/jobs", Attributes: map[string]string{"app": "analytics"}}
	if _, err := a.CreateWorkload(w); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateWorkload(Workload{Name: "again", Cgroup: w.Cgroup}); !errors.Is(err, portal.ErrExists) {
		t.Errorf("second workload on one cgroup: %v, want ErrExists", err)
	}
	if p := k.last(); len(p.Endpoints) != 0 || !reflect.DeepEqual(p.Unresolved, []string{"cgroup /sys/fs/cgroup/jobs: no process in a container"}) {
		t.Errorf("plan with an empty cgroup: %+v", p)
	}
	n := plans()
	a.dp.refreshCgroups()
	if plans() != n {
		t.Errorf("refresh with nothing changed rewrote the maps")
	}
	setVeths(7, 9)
	a.dp.refreshCgroups()
	want := map[endpoint]uint32{{Ifindex: 7}: 1, {Ifindex: 9}: 1}
	if p := k.last(); plans() != n+1 || !reflect.DeepEqual(p.Endpoints, want) || len(p.Unresolved) != 0 {
		t.Errorf("after a process appeared: %d plans (want %d), last %+v", plans(), n+1, p)
	}
	a.dp.refreshCgroups()
	if plans() != n+1 {
		t.Errorf("refresh with nothing changed rewrote the maps")
	}
	setVeths()
	a.dp.refreshCgroups()
	if p := k.last(); plans() != n+2 || len(p.Endpoints) != 0 {
		t.Errorf("after the processes left: %d plans (want %d), last %+v", plans(), n+2, p)
	}
	if ws := a.Workloads(); len(ws) != 1 || ws[0].Cgroup != w.Cgroup {
		t.Errorf("Workloads() = %+v", ws)
	}
}
