package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrNoCgroup means a path is not a cgroup v2 directory (or is gone).
var ErrNoCgroup = errors.New("no such cgroup v2 directory")

// CgroupVeths returns the ifindexes, sorted and without duplicates, of the
// host-side veths of the containers whose processes are in the cgroup v2
// directory cgroupDir. The TC programs see packets, not processes, so a
// cgroup is resolved here, in user space: the processes listed in its
// cgroup.procs (that directory only, not its child cgroups), their network
// namespaces (/proc/PID/ns/net), the veths in those namespaces, and their
// peers in the caller's network namespace (the "host").
//
// A veth counts only if its peer is in the host namespace (the namespace
// id the kernel reports for the peer, IFLA_LINK_NETNSID, is the host's)
// and the host has a veth of that ifindex whose own peer is it. Processes
// in the host namespace itself contribute nothing; so does an empty
// cgroup (no ifindexes, no error). A missing directory is ErrNoCgroup.
// Processes that exit while being looked at are skipped.
func CgroupVeths(cgroupDir string) ([]int, error) {
	pids, err := cgroupProcs(cgroupDir)
	if err != nil || len(pids) == 0 {
		return nil, err
	}
	host, hostNL, err := currentNetns()
	if err != nil {
		return nil, fmt.Errorf("resolve cgroup %s: %w", cgroupDir, err)
	}
	defer host.Close()
	defer hostNL.Close()
	seen := map[string]bool{host.UniqueId(): true}
	var out []int
	for _, pid := range pids {
		ns, err := netns.GetFromPath(fmt.Sprintf("/proc/%d/ns/net", pid))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, os.ErrPermission) && processGone(pid) {
			continue // it exited
		}
		if err != nil {
			return nil, fmt.Errorf("resolve cgroup %s: open network namespace of process %d: %w", cgroupDir, pid, err)
		}
		id := ns.UniqueId()
		if seen[id] {
			ns.Close()
			continue
		}
		seen[id] = true
		idx, err := hostVeths(ns, host, hostNL)
		ns.Close()
		if err != nil {
			return nil, fmt.Errorf("resolve cgroup %s: process %d: %w", cgroupDir, pid, err)
		}
		out = append(out, idx...)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// cgroupProcs reads the process ids in dir's cgroup.procs.
func cgroupProcs(dir string) ([]int, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("read cgroup %q: want an absolute path: %w", dir, ErrNoCgroup)
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read cgroup %s: %w", dir, ErrNoCgroup)
	}
	if err != nil {
		return nil, fmt.Errorf("read cgroup %s: %w", dir, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("read cgroup %s: bad process id %q in cgroup.procs", dir, f)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// processGone reports whether pid no longer exists.
func processGone(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return errors.Is(err, fs.ErrNotExist)
}

// currentNetns opens the calling thread's network namespace and a netlink
// handle in it.
func currentNetns() (netns.NsHandle, *netlink.Handle, error) {
	// The namespace is per thread: read it and open the handle on one.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ns, err := netns.Get()
	if err != nil {
		return 0, nil, fmt.Errorf("open current network namespace: %w", err)
	}
	// Entering the namespace it is in changes nothing but asks the kernel
	// for CAP_SYS_ADMIN, which entering the containers' namespaces needs:
	// its EPERM says so (netlink's handle loses the errno).
	if err := unix.Setns(int(ns), unix.CLONE_NEWNET); err != nil {
		ns.Close()
		return 0, nil, fmt.Errorf("enter network namespace: %w", capabilityError(err, "CAP_SYS_ADMIN"))
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return 0, nil, fmt.Errorf("open netlink in current network namespace: %w", err)
	}
	return ns, h, nil
}

// hostVeths returns the host-side ifindexes of the veths in ns whose peer
// is in host.
func hostVeths(ns, host netns.NsHandle, hostNL *netlink.Handle) ([]int, error) {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("open netlink in its network namespace: %w", err)
	}
	defer h.Close()
	pairs, err := peerVeths(h, host, hostNL)
	if err != nil {
		return nil, err
	}
	out := make([]int, 0, len(pairs))
	for _, p := range pairs {
		out = append(out, p.host.Attrs().Index)
	}
	return out, nil
}

// vethPair is a veth inside a namespace and its peer in the host.
type vethPair struct{ inner, host netlink.Link }

// peerVeths returns the veths of the namespace h is in whose peer is in
// host: the kernel's id of the peer's namespace (IFLA_LINK_NETNSID) is
// host's, and host has a veth of the peer's ifindex whose own peer is it.
func peerVeths(h *netlink.Handle, host netns.NsHandle, hostNL *netlink.Handle) ([]vethPair, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links in its network namespace: %w", err)
	}
	// Asked after LinkList: listing a veth whose peer is in host makes the
	// kernel give host an id in ns (IFLA_LINK_NETNSID), if it had none.
	hostID, err := h.GetNetNsIdByFd(int(host))
	if err != nil {
		return nil, fmt.Errorf("get the id of the host network namespace: %w", err)
	}
	var out []vethPair
	for _, l := range links {
		a := l.Attrs()
		if l.Type() != "veth" || hostID < 0 || a.NetNsID != hostID || a.ParentIndex == 0 {
			continue
		}
		peer, err := hostNL.LinkByIndex(a.ParentIndex)
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("find peer %d of %s: %w", a.ParentIndex, a.Name, err)
		}
		if peer.Type() == "veth" && peer.Attrs().ParentIndex == a.Index {
			out = append(out, vethPair{inner: l, host: peer})
		}
	}
	return out, nil
}
