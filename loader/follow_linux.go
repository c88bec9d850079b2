package loader

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Event is something Follow did or failed to do, for the caller to log.
type Event struct {
	Device  string
	Ifindex int
	Role    Role
	Action  string // "attached", "retargeted" (another role), "detached" (device gone) or "failed"
	Err     error
}

// Follow attaches the programs to the bridges named (every bridge if none)
// and to every veth that is a port of one of them, and keeps doing so as
// containers' veths come and go (netlink link updates), until ctx ends.
// It is FollowDevices with bridges only.
func (d *Datapath) Follow(ctx context.Context, bridges []string, report func(Event), refresh func()) error {
	return d.FollowDevices(ctx, Devices{Bridges: bridges}, report, refresh)
}

// FollowDevices is Follow for the bridges of devs and their ports, and for
// the routed veths devs.Routed names (program routed on each).
// report is called from Follow's goroutine for each change; refresh, if
// not nil, after each batch of changes (so the caller can re-resolve
// workloads named by interface). It returns once the current devices are
// attached; errors attaching them are returned joined, later ones reported.
func (d *Datapath) FollowDevices(ctx context.Context, devs Devices, report func(Event), refresh func()) error {
	if err := devs.check(); err != nil {
		return err
	}
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) { report(Event{Action: "failed", Err: fmt.Errorf("link updates: %w", err)}) },
	}); err != nil {
		return fmt.Errorf("subscribe to link updates: %w", err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		close(done)
		return fmt.Errorf("list links: %w", err)
	}
	f := &follower{d: d, bridges: devs.Bridges, routed: devs.Routed, report: report}
	var errs []error
	for _, l := range f.order(links) {
		if ev, ok := f.consider(l); ok && ev.Err != nil {
			errs = append(errs, ev.Err)
		}
	}
	// The goroutine works in the caller's network namespace, whichever
	// thread it runs on: ifindexes mean something only there.
	ns, err := netns.Get()
	if err != nil {
		close(done)
		return fmt.Errorf("open current network namespace: %w", err)
	}
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		err := netns.Set(ns)
		ns.Close()
		if err != nil {
			report(Event{Action: "failed", Err: fmt.Errorf("enter network namespace: %w", err)})
			return
		}
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-updates:
				if !ok {
					return
				}
				f.update(u)
				if refresh != nil && len(updates) == 0 {
					refresh()
				}
			}
		}
	}()
	return errors.Join(errs...)
}

type follower struct {
	d       *Datapath
	bridges []string
	routed  []string // name patterns of routed veths
	report  func(Event)
}

// order puts bridges first, so that a port's packets never reach a bridge
// without its program.
func (f *follower) order(links []netlink.Link) []netlink.Link {
	out := slices.Clone(links)
	slices.SortStableFunc(out, func(a, b netlink.Link) int {
		return boolInt(b.Type() == "bridge") - boolInt(a.Type() == "bridge")
	})
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// role says which program a device should have, if any.
func (f *follower) role(l netlink.Link) (Role, bool) {
	a := l.Attrs()
	if l.Type() == "bridge" && (len(f.bridges) == 0 || slices.Contains(f.bridges, a.Name)) {
		return Bridge, true
	}
	if l.Type() != "veth" {
		return "", false
	}
	if a.MasterIndex == 0 {
		if matchAny(f.routed, a.Name) {
			return Routed, true
		}
		return "", false
	}
	m, err := netlink.LinkByIndex(a.MasterIndex)
	if err != nil || m.Type() != "bridge" {
		return "", false
	}
	if len(f.bridges) == 0 || slices.Contains(f.bridges, m.Attrs().Name) {
		return Port, true
	}
	return "", false
}

// consider attaches l if it should have a program and has none yet, or
// gives it the program of its role if it has another's.
func (f *follower) consider(l netlink.Link) (Event, bool) {
	role, ok := f.role(l)
	if !ok {
		return Event{}, false
	}
	a := l.Attrs()
	f.d.mu.Lock()
	at, have := f.d.links[a.Index]
	var was Role
	if have {
		was = at.role
	}
	f.d.mu.Unlock()
	if have && was == role {
		return Event{}, false
	}
	ev := Event{Device: a.Name, Ifindex: a.Index, Role: role, Action: "attached"}
	var err error
	if have {
		ev.Action = "retargeted"
		err = f.d.Retarget(a.Index, role)
	} else {
		err = f.d.Attach(a.Index, role)
	}
	if err != nil {
		ev.Action, ev.Err = "failed", err
	}
	f.report(ev)
	return ev, true
}

func (f *follower) update(u netlink.LinkUpdate) {
	a := u.Link.Attrs()
	if u.Header.Type == unix.RTM_DELLINK {
		f.d.mu.Lock()
		at, have := f.d.links[a.Index]
		f.d.mu.Unlock()
		if !have {
			return
		}
		ev := Event{Device: a.Name, Ifindex: a.Index, Role: at.role, Action: "detached"}
		ev.Err = f.d.Forget(a.Index)
		f.report(ev)
		return
	}
	f.consider(u.Link)
}
