package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ContainerVeths returns, sorted by ifindex, the veths of the caller's
// network namespace (the "host") whose peer is in another namespace, each
// with the IPv4 addresses configured on that peer: where each container
// address lives. It is the source the agent binds workload addresses to
// interfaces from, because only the container's own configuration (and
// whoever can change it: its runtime, or a process inside it with
// CAP_NET_ADMIN) decides it; ARP and neighbour or FDB entries, which any
// neighbour on the bridge can influence, play no part.
//
// The namespaces are found where runtimes keep them (iproute2's and CNI's
// /run/netns, Docker's /run/docker/netns) and through every process and
// thread in /proc; each is read once. A namespace that disappears while
// being read is skipped; any other failure to read one is an error, since
// a namespace missed could hide a second interface holding an address.
func ContainerVeths() ([]ContainerVeth, error) {
	host, hostNL, err := currentNetns()
	if err != nil {
		return nil, fmt.Errorf("list container addresses: %w", err)
	}
	defer host.Close()
	defer hostNL.Close()
	var hst unix.Stat_t
	if err := unix.Fstat(int(host), &hst); err != nil {
		return nil, fmt.Errorf("list container addresses: stat host namespace: %w", err)
	}
	type nsID struct{ dev, ino uint64 }
	seen := map[nsID]bool{{hst.Dev, hst.Ino}: true}
	var out []ContainerVeth
	var errs []error
	for _, p := range containerNamespacePaths() {
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil || seen[nsID{st.Dev, st.Ino}] {
			continue
		}
		seen[nsID{st.Dev, st.Ino}] = true
		ns, err := netns.GetFromPath(p)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			continue // gone meanwhile
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("open network namespace %s: %w", p, capabilityError(err, "CAP_SYS_PTRACE")))
			continue
		}
		// A runtime creates the file, then bind-mounts the namespace on
		// it, and unmounts it before removing the file: a file that is not
		// on nsfs is no namespace (yet, or any more), and hides nothing.
		var sfs unix.Statfs_t
		if err := unix.Fstatfs(int(ns), &sfs); err == nil && sfs.Type != unix.NSFS_MAGIC {
			ns.Close()
			continue
		}
		vs, err := vethAddrs(ns, host, hostNL)
		ns.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("network namespace %s: %w", p, capabilityError(err, "CAP_SYS_ADMIN")))
			continue
		}
		out = append(out, vs...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("list container addresses: %w", err)
	}
	slices.SortFunc(out, func(a, b ContainerVeth) int { return a.Ifindex - b.Ifindex })
	return out, nil
}

// containerNamespacePaths lists where network namespaces can be opened:
// the named ones, then those of processes and threads.
func containerNamespacePaths() []string {
	out := namespacePaths()
	for _, pattern := range []string{"/run/docker/netns/*"} {
		m, _ := filepath.Glob(pattern)
		out = append(out, m...)
	}
	return out
}

// vethAddrs returns the veths of ns whose peer is in host, by their host
// side, with the IPv4 addresses on the ns side.
func vethAddrs(ns, host netns.NsHandle, hostNL *netlink.Handle) ([]ContainerVeth, error) {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	defer h.Close()
	pairs, err := peerVeths(h, host, hostNL)
	if err != nil {
		return nil, err
	}
	var out []ContainerVeth
	for _, p := range pairs {
		addrs, err := h.AddrList(p.inner, netlink.FAMILY_V4)
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list addresses of %s: %w", p.inner.Attrs().Name, err)
		}
		cv := ContainerVeth{Ifindex: p.host.Attrs().Index, Name: p.host.Attrs().Name}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && a.IP.To4() != nil {
				cv.Addrs = append(cv.Addrs, ip)
			}
		}
		slices.SortFunc(cv.Addrs, netip.Addr.Compare)
		out = append(out, cv)
	}
	return out, nil
}

// HostAddrs returns the IPv4 addresses of the caller's network namespace,
// sorted: where an explicit inlet listening on 0.0.0.0 can be reached.
func HostAddrs() ([]netip.Addr, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && a.IP.To4() != nil {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}
