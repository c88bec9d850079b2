package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrNoPeerNetns means the device is not a veth whose peer lives in another
// namespace that a process of this machine is in.
var ErrNoPeerNetns = errors.New("no network namespace behind this device")

// NetnsCookieBehind returns the cookie of the network namespace at the far
// end of veth ifindex (a container's). It finds the namespace through the
// named namespaces and the processes in /proc, so it costs a scan: cache
// the answer per device.
func NetnsCookieBehind(ifindex int) (uint64, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return 0, fmt.Errorf("find ifindex %d: %w", ifindex, err)
	}
	nsid := l.Attrs().NetNsID
	if l.Type() != "veth" || nsid < 0 {
		return 0, fmt.Errorf("ifindex %d (%s): %w", ifindex, l.Attrs().Name, ErrNoPeerNetns)
	}
	seen := map[uint64]bool{}
	for _, p := range namespacePaths() {
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil || seen[st.Ino] {
			continue
		}
		seen[st.Ino] = true
		ns, err := netns.GetFromPath(p)
		if err != nil {
			continue
		}
		id, err := netlink.GetNetNsIdByFd(int(ns))
		if err != nil || id != nsid {
			ns.Close()
			continue
		}
		cookie, err := netnsCookie(ns)
		ns.Close()
		return cookie, err
	}
	return 0, fmt.Errorf("ifindex %d (%s): its peer's namespace (nsid %d) is neither named nor any process's: %w", ifindex, l.Attrs().Name, nsid, ErrNoPeerNetns)
}

// namespacePaths lists where network namespaces can be opened: the named
// ones (iproute2's, Docker's), then those of processes, then of threads.
// The processes' paths are built, not globbed: a glob of /proc/*/ns/net
// reads each /proc/PID/ns directory, which only the process's owner (or
// CAP_DAC_READ_SEARCH) may list, while opening ns/net itself needs only
// CAP_SYS_PTRACE; an agent with just the data path's capabilities missed
// every container whose processes run as another user.
func namespacePaths() []string {
	var out []string
	for _, pattern := range []string{"/run/netns/*", "/var/run/docker/netns/*"} {
		m, _ := filepath.Glob(pattern)
		out = append(out, m...)
	}
	procs, _ := os.ReadDir("/proc")
	var tasks []string
	for _, p := range procs {
		if !isPID(p.Name()) {
			continue
		}
		out = append(out, "/proc/"+p.Name()+"/ns/net")
		ts, _ := os.ReadDir("/proc/" + p.Name() + "/task")
		for _, t := range ts {
			if isPID(t.Name()) {
				tasks = append(tasks, "/proc/"+p.Name()+"/task/"+t.Name()+"/ns/net")
			}
		}
	}
	return append(out, tasks...)
}

// isPID says whether a /proc entry's name is a process (or thread) ID.
func isPID(name string) bool {
	_, err := strconv.ParseUint(name, 10, 32)
	return err == nil
}

// netnsCookie reads a namespace's cookie through a socket made inside it.
func netnsCookie(ns netns.NsHandle) (uint64, error) {
	type result struct {
		cookie uint64
		err    error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: err}
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("enter namespace: %w", err)}
			return
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		var r result
		if err != nil {
			r.err = fmt.Errorf("socket in namespace: %w", err)
		} else {
			r.cookie, r.err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
			unix.Close(fd)
		}
		if err := netns.Set(orig); err != nil {
			// Stay locked: the runtime ends this thread with the goroutine.
			done <- result{err: errors.Join(r.err, err)}
			return
		}
		runtime.UnlockOSThread()
		done <- r
	}()
	r := <-done
	return r.cookie, r.err
}

// SocketNetnsCookie returns the cookie of the namespace a socket lives in.
func SocketNetnsCookie(fd uintptr) (uint64, error) {
	c, err := unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("read netns cookie of socket %s: %w", strconv.Itoa(int(fd)), err)
	}
	return c, nil
}
