package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// sockopsPin is where the sockops program's cgroup link is pinned.
const sockopsPin = "sockops-cgroup"

// Accel is socket acceleration (bpf/sockops.c): the sockops program on the
// cgroup v2 root, which puts app sockets connecting to services into the
// socks map, and the sk_msg program on that map, which redirects the
// agent's writes into the app sockets it was paired with.
type Accel struct {
	objs SockopsObjects
	cg   link.Link
}

// OpenAccel loads the acceleration programs, sharing the data path's pinned
// services map, and attaches them: sockops to the root of the cgroup v2
// hierarchy (a pinned link, updated in place if a previous agent left one)
// and sk_msg to the socks map.
func (d *Datapath) OpenAccel() (_ *Accel, err error) {
	root, err := cgroup2Root()
	if err != nil {
		return nil, fmt.Errorf("open socket acceleration: %w", err)
	}
	spec, err := LoadSockops()
	if err != nil {
		return nil, fmt.Errorf("open socket acceleration: %w", err)
	}
	a := &Accel{}
	if err := spec.LoadAndAssign(&a.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: d.opts.PinDir}}); err != nil {
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("open socket acceleration: %w: %w", err, ErrIncompatible)
		}
		return nil, fmt.Errorf("open socket acceleration: %w", err)
	}
	defer closeOnError(&err, a) // the link, once there is one, and the objects
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{
		Target: a.objs.Socks.FD(), Program: a.objs.Redirect, Attach: ebpf.AttachSkMsgVerdict,
	}); err != nil {
		return nil, fmt.Errorf("attach sk_msg program to socks: %w", err)
	}
	pin := filepath.Join(d.opts.PinDir, linksDir, sockopsPin)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		a.cg = l
		if err := l.Update(a.objs.Track); err != nil {
			return nil, fmt.Errorf("adopt %s: update program: %w", pin, err)
		}
		return a, nil
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: root, Attach: ebpf.AttachCGroupSockOps, Program: a.objs.Track})
	if err != nil {
		return nil, fmt.Errorf("attach sockops program to cgroup %s: %w", root, err)
	}
	a.cg = l
	if err := l.Pin(pin); err != nil {
		return nil, fmt.Errorf("pin sockops link: %w", err)
	}
	return a, nil
}

// DisableAccel detaches socket acceleration that a previous agent left:
// its sockops link. Sockets already in socks keep their pairing until they
// close; no new one joins. Nothing left is not an error.
func (d *Datapath) DisableAccel() error {
	pin := filepath.Join(d.opts.PinDir, linksDir, sockopsPin)
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("disable socket acceleration: %w", err)
	}
	return errors.Join(l.Unpin(), l.Close())
}

// Maps returns the acceleration maps, for package maps.
func (a *Accel) Maps() *SockopsMaps { return &a.objs.SockopsMaps }

// Close releases the handles; the pinned link and maps stay.
func (a *Accel) Close() error {
	var err error
	if a.cg != nil { // OpenAccel failed before it had the link
		err = a.cg.Close()
	}
	return errors.Join(err, a.objs.Close())
}

// cgroup2Root is where the cgroup v2 hierarchy is mounted.
func cgroup2Root() (string, error) {
	b, err := os.ReadFile(procSelf() + "/mountinfo")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		if f := strings.Fields(pre); len(f) >= 5 {
			return f[4], nil
		}
	}
	return "", errors.New("no cgroup2 mount: socket acceleration needs cgroup v2")
}
