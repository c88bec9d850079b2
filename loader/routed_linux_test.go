package loader_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/loader"
	smaps "github.com/sluicehq/sluice/maps"
	"github.com/sluicehq/sluice/testenv"
)

// routedHost builds a testenv.Routed host (two pods on routed veths, no
// bridge) and a pin directory of the test's own, cleaned up after it.
func routedHost(t testing.TB, opts loader.Options) (*testenv.Routed, loader.Options) {
	t.Helper()
	e := testenv.NewT(t)
	r, err := testenv.NewRouted(e)
	if err != nil {
		t.Fatal(err)
	}
	opts.PinDir = filepath.Join("/sys/fs/bpf", "sluice-test-"+e.RunID())
	t.Cleanup(func() {
		if err := r.Host.Do(func() error { return loader.Cleanup(opts) }); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return r, opts
}

// followRouted opens the data path in host and follows the routed veths
// that pattern names; closing it stops following.
func followRouted(t testing.TB, host *testenv.NS, opts loader.Options, pattern string) (_ *loader.Datapath, _ func() []loader.Event, _ func() error) {
	t.Helper()
	events := make(chan loader.Event, 64)
	var d *loader.Datapath
	ctx, cancel := context.WithCancel(context.Background())
	err := host.Do(func() error {
		var err error
		if d, err = loader.Open(opts); err != nil {
			return err
		}
		return d.FollowDevices(ctx, loader.Devices{Routed: []string{pattern}}, func(ev loader.Event) { events <- ev }, nil)
	})
	if err != nil {
		cancel()
		t.Fatalf("open and follow: %v", err)
	}
	t.Cleanup(cancel)
	drain := func() []loader.Event {
		var out []loader.Event
		for {
			select {
			case ev := <-events:
				out = append(out, ev)
			default:
				return out
			}
		}
	}
	return d, drain, func() error { cancel(); return d.Close() }
}

// TestRoutedVeths runs the data path on routed veths, with no bridge: the
// routed program on each pod's veth steers the allowed pod's connection to
// the agent's listener (bpf_sk_assign from the veth's own ingress works:
// the packet is delivered locally straight from there), refuses the other
// pod and a spoofed source address with a reset, refuses everyone once the
// agent's listener is gone and while no agent runs (the pinned links
// stay), is adopted by a restarted agent, follows veths that come and go,
// and leaves nothing after cleanup.
func TestRoutedVeths(t *testing.T) {
	r, opts := routedHost(t, loader.Options{})
	host, a, b := r.Host, r.A, r.B
	d, events, closeDP := followRouted(t, host, opts, testenv.RoutedVethPrefix+"*")

	t.Run("follows the routed veths, program routed", func(t *testing.T) {
		got := map[int]loader.Role{}
		for _, at := range d.Attachments() {
			got[at.Ifindex] = at.Role
			if at.Hook != "tcx/ingress" || at.Link == 0 || at.Pinned == "" {
				t.Errorf("ifindex %d: %+v, want a pinned tcx link", at.Ifindex, at)
			}
		}
		want := map[int]loader.Role{vethIndex(t, host, a): loader.Routed, vethIndex(t, host, b): loader.Routed}
		if !maps.Equal(got, want) {
			t.Errorf("attachments %v, want %v", got, want)
		}
	})
	m := allowApp(t, host, d, a)
	ln := transparentListener(t, host, m)

	t.Run("allowed pod reaches the agent at the service address", func(t *testing.T) {
		roundTrip(t, a, ln)
		c, err := m.Counters.Read(portal)
		if err != nil {
			t.Fatal(err)
		}
		if c.Steered != 1 || c.Refused != 0 {
			t.Errorf("counters %+v: want one steered, none refused", c)
		}
	})
	t.Run("other pod refused at once", func(t *testing.T) {
		expectRefused(t, b)
	})
	t.Run("spoofed source address refused", func(t *testing.T) {
		before, _ := m.Counters.Read(portal)
		if _, err := b.NS.Run(context.Background(), "ip", "addr", "add", a.Addr+"/32", "dev", "eth0"); err != nil {
			t.Fatal(err)
		}
		defer b.NS.Run(context.Background(), "ip", "addr", "del", a.Addr+"/32", "dev", "eth0")
		conn, err := b.NS.DialTCPFrom(context.Background(), netip.MustParseAddr(a.Addr), svc.String(), 2*time.Second)
		if err == nil {
			conn.Close()
			t.Fatal("the other pod reached the service with the allowed pod's address")
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("spoofed connection: %v, want connection refused", err)
		}
		after, _ := m.Counters.Read(portal)
		if after.Spoofed != before.Spoofed+1 || after.Refused != before.Refused+1 {
			t.Errorf("counters %+v -> %+v: want one more spoofed and refused", before, after)
		}
	})
	t.Run("no agent listening: refused", func(t *testing.T) {
		ln.Close()
		expectRefused(t, a)
		c, err := m.Counters.Read(portal)
		if err != nil {
			t.Fatal(err)
		}
		if c.NoListener != 1 {
			t.Errorf("counters %+v: want one no_listener", c)
		}
	})
	before := d.Attachments()
	if err := closeDP(); err != nil {
		t.Fatal(err)
	}
	t.Run("agent gone, pins stay: still refused", func(t *testing.T) {
		expectRefused(t, a)
		expectRefused(t, b)
	})

	d, events, closeDP = followRouted(t, host, opts, testenv.RoutedVethPrefix+"*")
	t.Run("restart adopts the same links", func(t *testing.T) {
		after := d.Attachments()
		links := map[int]uint32{}
		for _, at := range before {
			links[at.Ifindex] = at.Link
		}
		if len(after) != len(before) {
			t.Fatalf("after restart %+v, before %+v", after, before)
		}
		for _, at := range after {
			if links[at.Ifindex] != at.Link || at.Role != loader.Routed {
				t.Errorf("%s: link %d (%s) after restart, %d before", at.Device, at.Link, at.Role, links[at.Ifindex])
			}
		}
		roundTrip(t, a, transparentListener(t, host, smaps.New(d.Maps())))
	})
	t.Run("a new pod's veth is followed, a deleted one forgotten", func(t *testing.T) {
		events() // the adoption's
		c, err := host.Env().RoutedPod(host, host.Env().RoutedVethName(), "podc", "10.30.0.4")
		if err != nil {
			t.Fatal(err)
		}
		waitEvent(t, events, c.Veth, "attached")
		expectRefused(t, c)
		if _, err := host.Run(context.Background(), "ip", "link", "del", c.Veth); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, events, c.Veth, "detached")
		pins, _ := os.ReadDir(filepath.Join(opts.PinDir, "links"))
		if len(pins) != 2 {
			t.Errorf("%d link pins after the veth went, want 2", len(pins))
		}
	})
	t.Run("a bridge port stays a port, another name is not followed", func(t *testing.T) {
		e := host.Env()
		if err := e.Bridge(host, "br9", ""); err != nil {
			t.Fatal(err)
		}
		port := testenv.RoutedVethPrefix + "port"
		other := e.LinkName()
		ns, err := e.Namespace("podd")
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Veth(host, port, "", ns, "eth0", ""); err != nil {
			t.Fatal(err)
		}
		if err := e.AttachToBridge(host, port, "br9"); err != nil {
			t.Fatal(err)
		}
		if err := e.Veth(host, other, "", ns, "eth1", ""); err != nil {
			t.Fatal(err)
		}
		// Created first, enslaved after (as runtimes do): the pattern
		// matched it, then it became a bridge port.
		waitEvent(t, events, port, "retargeted")
		roles := map[int]loader.Role{}
		for _, at := range d.Attachments() {
			roles[at.Ifindex] = at.Role
		}
		idx := func(dev string) int {
			var i int
			if err := host.Do(func() error {
				ifi, err := net.InterfaceByName(dev)
				if err == nil {
					i = ifi.Index
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
			return i
		}
		// No --bridge: every bridge is followed, as before.
		if r := roles[idx(port)]; r != loader.Port {
			t.Errorf("the bridge port %s matching the pattern got %q, want %q (a bridge port's program)", port, r, loader.Port)
		}
		if _, err := os.Stat(filepath.Join(opts.PinDir, "links", fmt.Sprintf("steer-%d", idx(port)))); err != nil {
			t.Errorf("the retargeted link's pin: %v", err)
		}
		if r := roles[idx("br9")]; r != loader.Bridge {
			t.Errorf("the bridge got %q, want %q", r, loader.Bridge)
		}
		if n := len(tcxPrograms(t, host, other)); n != 0 {
			t.Errorf("%s, a veth the pattern does not match, got a program", other)
		}
	})
	t.Run("backstop rules follow the services", func(t *testing.T) {
		other := netip.MustParseAddrPort("10.200.0.11:80")
		for _, set := range [][]netip.AddrPort{{svc, other}, {svc}} {
			if err := host.Do(func() error { return d.SetBackstop(set) }); err != nil {
				t.Fatal(err)
			}
			if got := backstopRules(t, host); !slices.Equal(got, ruleLines(set)) {
				t.Errorf("after SetBackstop(%v), rules %q", set, got)
			}
		}
	})
	if err := closeDP(); err != nil {
		t.Fatal(err)
	}
	t.Run("cleanup leaves nothing", func(t *testing.T) {
		defer func() {
			if got := backstopRules(t, host); len(got) != 0 {
				t.Errorf("backstop rules after cleanup: %q", got)
			}
		}()
		if err := host.Do(func() error { return loader.Cleanup(opts) }); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(opts.PinDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin directory still there: %v", err)
		}
		for _, dev := range []string{a.Veth, b.Veth} {
			if n := len(tcxPrograms(t, host, dev)); n != 0 {
				t.Errorf("%s: %d TCX programs after cleanup", dev, n)
			}
		}
	})
}

// waitEvent waits up to 5 s for Follow to report action on dev.
func waitEvent(t *testing.T, events func() []loader.Event, dev, action string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if slices.ContainsFunc(events(), func(ev loader.Event) bool { return ev.Device == dev && ev.Action == action && ev.Err == nil }) {
			return
		}
	}
	t.Fatalf("no %q event for %s within 5s", action, dev)
}

// TestRoutedPatterns checks the routed veth patterns before any syscall.
func TestRoutedPatterns(t *testing.T) {
	for _, p := range []string{"cali*", "lxc*", "veth[0-9]*", "cali1234567890a"} {
		if err := loader.CheckRoutedPattern(p); err != nil {
			t.Errorf("%q: %v", p, err)
		}
	}
	for _, p := range []string{"", "cali[", "a/b*", "a-name-that-is-too-long"} {
		if err := loader.CheckRoutedPattern(p); !errors.Is(err, loader.ErrBadPattern) {
			t.Errorf("%q: %v, want ErrBadPattern", p, err)
		}
	}
}

// backstopRules lists the prohibit rules in host, as `ip rule` prints them.
func backstopRules(t *testing.T, host *testenv.NS) []string {
	t.Helper()
	out, err := host.Run(context.Background(), "ip", "rule", "show")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "prohibit") {
			got = append(got, strings.Join(strings.Fields(l), " "))
		}
	}
	slices.Sort(got)
	return got
}

// ruleLines is how `ip rule` prints the backstop rules of svcs.
func ruleLines(svcs []netip.AddrPort) []string {
	var out []string
	for _, s := range svcs {
		out = append(out, fmt.Sprintf("%d: from all to %s ipproto tcp dport %d prohibit", loader.DefaultRulePriority+1, s.Addr(), s.Port()))
	}
	slices.Sort(out)
	return out
}

// TestRoutedWorkloadSources: what the agent binds workloads from finds a
// routed pod as it finds a bridged container: its host-side veth with the
// pod's address (ContainerVeths, for --address) and, from a process in
// its cgroup, that veth (CgroupVeths, for --cgroup).
func TestRoutedWorkloadSources(t *testing.T) {
	r, _ := routedHost(t, loader.Options{})
	host, a, b := r.Host, r.A, r.B
	// `ip netns exec` moves the process into the pod's namespace after it
	// is born in the cgroup: it says ready once it is there.
	p, err := a.NS.Start("sleep", []string{"sh", "-c", "echo ready; exec sleep 300"}, testenv.ProcOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitOutput(ctx, "ready"); err != nil {
		t.Fatal(err)
	}
	var veths []loader.ContainerVeth
	var cg []int
	err = host.Do(func() (err error) {
		if veths, err = loader.ContainerVeths(); err != nil {
			return err
		}
		cg, err = loader.CgroupVeths(a.Cgroup)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]string{vethIndex(t, host, a): a.Addr, vethIndex(t, host, b): b.Addr}
	for _, v := range veths {
		if addr, ok := want[v.Ifindex]; ok {
			if len(v.Addrs) != 1 || v.Addrs[0].String() != addr || v.Name != map[string]string{a.Addr: a.Veth, b.Addr: b.Veth}[addr] {
				t.Errorf("ContainerVeths: %+v, want %s with %s", v, v.Name, addr)
			}
			delete(want, v.Ifindex)
		}
	}
	if len(want) != 0 {
		t.Errorf("ContainerVeths misses the routed veths %v: %+v", want, veths)
	}
	if !slices.Equal(cg, []int{vethIndex(t, host, a)}) {
		t.Errorf("CgroupVeths(pod a's cgroup) = %v, want [%d]", cg, vethIndex(t, host, a))
	}
}

// TestRoutedClsact runs the routed program through clsact, as on kernels
// without TCX: steering, refusal, and cleanup of our filter.
func TestRoutedClsact(t *testing.T) {
	r, opts := routedHost(t, loader.Options{NoTCX: true})
	host, a, b := r.Host, r.A, r.B
	d, _, closeDP := followRouted(t, host, opts, testenv.RoutedVethPrefix+"*")
	for _, at := range d.Attachments() {
		if at.Hook != "clsact/ingress" || at.Role != loader.Routed {
			t.Errorf("ifindex %d: %s at %s, want routed at clsact/ingress", at.Ifindex, at.Role, at.Hook)
		}
	}
	m := allowApp(t, host, d, a)
	roundTrip(t, a, transparentListener(t, host, m))
	expectRefused(t, b)
	if err := closeDP(); err != nil {
		t.Fatal(err)
	}
	expectRefused(t, b)
	if err := host.Do(func() error { return loader.Cleanup(opts) }); err != nil {
		t.Fatal(err)
	}
	out, err := host.Run(context.Background(), "tc", "filter", "show", "dev", a.Veth, "ingress")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "sluice_") {
		t.Errorf("our filter is still on %s after cleanup:\n%s", a.Veth, out)
	}
}
