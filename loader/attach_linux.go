package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	linksDir     = "links"
	filterPrefix = "sluice_" // clsact filters are found again by this prefix
	filterPrio   = 1
)

// attached is the program on one device: a TCX link, or a clsact filter
// (link nil).
type attached struct {
	ifindex int
	role    Role
	link    link.Link
}

func (d *Datapath) program(r Role) *ebpf.Program {
	switch r {
	case Bridge:
		return d.objs.Assign
	case Routed:
		return d.objs.Routed
	}
	return d.objs.Steer
}

// Attach puts the role's TC program on the ingress of device ifindex: TCX
// at the head, so that it sees portal traffic first while other programs
// on the device keep running (it returns "next" for everything else);
// clsact where TCX is missing. The link is pinned, so the program stays
// when the agent stops. Attaching twice is a no-op.
func (d *Datapath) Attach(ifindex int, role Role) error {
	if !role.known() {
		return fmt.Errorf("attach ifindex %d: unknown role %q", ifindex, role)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.links[ifindex]; ok {
		return nil
	}
	if !d.opts.NoTCX {
		l, err := link.AttachTCX(link.TCXOptions{
			Interface: ifindex,
			Program:   d.program(role),
			Attach:    ebpf.AttachTCXIngress,
			Anchor:    link.Head(),
		})
		if err == nil {
			if err := l.Pin(d.linkPin(role, ifindex)); err != nil {
				l.Close()
				return fmt.Errorf("pin tcx link of ifindex %d: %w", ifindex, err)
			}
			d.links[ifindex] = &attached{ifindex: ifindex, role: role, link: l}
			return nil
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("attach tcx to ifindex %d: %w", ifindex, err)
		}
	}
	if err := attachClsact(ifindex, role, d.program(role)); err != nil {
		return err
	}
	d.links[ifindex] = &attached{ifindex: ifindex, role: role}
	return nil
}

// Retarget gives device ifindex, attached with another role, the program
// of role instead, in place (no packet sees the device without one): a
// veth that a routed pattern matched when it appeared, then was made a
// bridge port (runtimes create a veth first and enslave it after). The
// link is pinned again under the new role's name.
func (d *Datapath) Retarget(ifindex int, role Role) error {
	if !role.known() {
		return fmt.Errorf("retarget ifindex %d: unknown role %q", ifindex, role)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.links[ifindex]
	if !ok {
		return fmt.Errorf("retarget ifindex %d: %w", ifindex, ErrNotAttached)
	}
	if a.role == role {
		return nil
	}
	if a.link == nil {
		if err := attachClsact(ifindex, role, d.program(role)); err != nil {
			return err
		}
		a.role = role
		return nil
	}
	if err := a.link.Update(d.program(role)); err != nil {
		return fmt.Errorf("retarget ifindex %d to %s: %w", ifindex, role, err)
	}
	old := a.role
	a.role = role
	if err := a.link.Pin(d.linkPin(role, ifindex)); err != nil {
		return fmt.Errorf("retarget ifindex %d: pin link: %w", ifindex, err)
	}
	if err := os.Remove(d.linkPin(old, ifindex)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("retarget ifindex %d: remove old pin: %w", ifindex, err)
	}
	return nil
}

// take removes and returns the record of device ifindex.
func (d *Datapath) take(ifindex int) (*attached, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.links[ifindex]
	delete(d.links, ifindex)
	return a, ok
}

// Detach removes the program from device ifindex.
func (d *Datapath) Detach(ifindex int) error {
	a, ok := d.take(ifindex)
	if !ok {
		return fmt.Errorf("detach ifindex %d: %w", ifindex, ErrNotAttached)
	}
	return detach(a)
}

// Forget drops the agent's record of a device that is gone (the kernel
// removed its program with it) and the link's pin.
func (d *Datapath) Forget(ifindex int) error {
	a, ok := d.take(ifindex)
	if !ok || a.link == nil {
		return nil
	}
	return errors.Join(a.link.Unpin(), a.link.Close())
}

func detach(a *attached) error {
	if a.link == nil {
		return detachClsact(a.ifindex)
	}
	err := errors.Join(a.link.Unpin(), a.link.Close())
	if err != nil {
		return fmt.Errorf("detach ifindex %d: %w", a.ifindex, err)
	}
	return nil
}

// Attachments lists where the program is attached.
func (d *Datapath) Attachments() []Attachment {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Attachment, 0, len(d.links))
	for _, a := range d.links {
		at := Attachment{Ifindex: a.ifindex, Role: a.role, Program: programID(d.program(a.role))}
		if l, err := netlink.LinkByIndex(a.ifindex); err == nil {
			at.Device = l.Attrs().Name
		}
		if a.link == nil {
			at.Hook = "clsact/ingress"
		} else {
			at.Hook = "tcx/ingress"
			at.Pinned = d.linkPin(a.role, a.ifindex)
			if info, err := a.link.Info(); err == nil {
				at.Link = uint32(info.ID)
				at.Program = uint32(info.Program)
			}
		}
		out = append(out, at)
	}
	return out
}

// linkPin is where a device's link is pinned: links/ROLE-IFINDEX.
func (d *Datapath) linkPin(r Role, ifindex int) string {
	return filepath.Join(d.opts.PinDir, linksDir, string(r)+"-"+strconv.Itoa(ifindex))
}

// parseLinkPin reads a link pin's name back.
func parseLinkPin(name string) (Role, int, bool) {
	r, n, ok := strings.Cut(name, "-")
	if !ok || !Role(r).known() {
		return "", 0, false
	}
	i, err := strconv.Atoi(n)
	return Role(r), i, err == nil
}

// adopt takes over the links a previous agent pinned: those whose device is
// gone are unpinned, the others get this agent's program, swapped in place
// (no packet sees the device without a program).
func (d *Datapath) adopt() error {
	dir := filepath.Join(d.opts.PinDir, linksDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read pinned links: %w", err)
	}
	var errs []error
	for _, e := range entries {
		role, ifindex, ok := parseLinkPin(e.Name())
		if !ok {
			continue
		}
		pin := filepath.Join(dir, e.Name())
		l, err := link.LoadPinnedLink(pin, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("adopt %s: %w", pin, err))
			continue
		}
		if _, err := netlink.LinkByIndex(ifindex); err != nil {
			errs = append(errs, l.Unpin(), l.Close())
			continue
		}
		if err := l.Update(d.program(role)); err != nil {
			l.Close()
			errs = append(errs, fmt.Errorf("adopt %s: update program: %w", pin, err))
			continue
		}
		d.links[ifindex] = &attached{ifindex: ifindex, role: role, link: l}
	}
	errs = append(errs, d.adoptClsact())
	return errors.Join(errs...)
}

// attachClsact adds a clsact qdisc (if missing) and our filter on ingress,
// replacing an older filter of ours in place.
func attachClsact(ifindex int, role Role, prog *ebpf.Program) error {
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc to ifindex %d: %w", ifindex, err)
	}
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    netlink.HANDLE_MIN_INGRESS,
			Handle:    netlink.MakeHandle(0, 1),
			Protocol:  unix.ETH_P_ALL,
			Priority:  filterPrio,
		},
		Fd:           prog.FD(),
		Name:         filterPrefix + string(role),
		DirectAction: true,
	}
	if err := netlink.FilterReplace(f); err != nil {
		return fmt.Errorf("add clsact filter to ifindex %d: %w", ifindex, err)
	}
	return nil
}

// ourFilters lists the filters of ours on device ifindex's ingress.
func ourFilters(ifindex int) ([]*netlink.BpfFilter, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return nil, err
	}
	fs, err := netlink.FilterList(l, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return nil, err
	}
	var out []*netlink.BpfFilter
	for _, f := range fs {
		if bf, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(bf.Name, filterPrefix) {
			out = append(out, bf)
		}
	}
	return out, nil
}

func detachClsact(ifindex int) error {
	fs, err := ourFilters(ifindex)
	if err != nil {
		return fmt.Errorf("detach clsact filter from ifindex %d: %w", ifindex, err)
	}
	var errs []error
	for _, f := range fs {
		errs = append(errs, netlink.FilterDel(f))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("detach clsact filter from ifindex %d: %w", ifindex, err)
	}
	return nil
}

// adoptClsact re-points the clsact filters a previous agent left to this
// agent's program.
func (d *Datapath) adoptClsact() error {
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var errs []error
	for _, l := range links {
		idx := l.Attrs().Index
		if _, ok := d.links[idx]; ok {
			continue
		}
		fs, err := ourFilters(idx)
		if err != nil || len(fs) == 0 {
			continue
		}
		role := Role(strings.TrimPrefix(fs[0].Name, filterPrefix))
		if !role.known() {
			continue
		}
		if err := attachClsact(idx, role, d.program(role)); err != nil {
			errs = append(errs, err)
			continue
		}
		d.links[idx] = &attached{ifindex: idx, role: role}
	}
	return errors.Join(errs...)
}
