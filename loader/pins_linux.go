package loader

// Do the pins outlive the agent? A pin lives as long as its bpffs: as long as
// some mount namespace has it mounted (or a process holds it open). The
// host's initial mount namespace lives as long as the machine; any other
// one (a container's, or the one `ip netns exec` makes, where /sys is
// mounted anew and /sys/fs/bpf is no bpffs) goes with its processes. The
// rule, from what a process can read of itself and of PID 1:
//
//	the agent is in the host's initial mount namespace
//	    (its inode is PROC_MNT_INIT_INO on Linux 6.x that have it)   persistent
//	the agent is in the host's PID namespace (PID 1 is the host's init):
//	    PID 1's mounts include a bpffs with the pin dir's device       persistent
//	    they do not                                                    ephemeral
//	the agent is in a PID namespace of its own (a container):
//	    it mounted the bpffs itself                                    ephemeral
//	    PID 1 (the container's init) has no mount of it                ephemeral
//	    else: the host's mounts are out of sight                      unknown, taken as
//	          (a bpffs there is most likely -v /sys/fs/bpf:/sys/fs/bpf)   the host's
//
// The namespaces' inode numbers for the initial PID namespace
// (PROC_PID_INIT_INO, 0xEFFFFFFC) and mount namespace (PROC_MNT_INIT_INO,
// 0xEFFFFFF8) are fixed by the kernel (include/linux/proc_ns.h).

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Inode numbers of the kernel's initial namespaces (include/linux/proc_ns.h).
const (
	initPIDNamespace   = 0xEFFFFFFC
	initMountNamespace = 0xEFFFFFF8
)

// procSelf is this thread's directory in /proc: a thread may have a mount
// namespace of its own (tests make one), and /proc/self is the process's.
func procSelf() string {
	if _, err := os.Stat("/proc/thread-self"); err == nil {
		return "/proc/thread-self"
	}
	return "/proc/self"
}

// nsInode is the inode number of a namespace file such as
// /proc/self/ns/mnt.
func nsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// PinLife tells whether pins in pinDir, an existing directory on bpffs,
// outlive this process; mountedHere says whether this process mounted that
// bpffs (ensureBPFFS). See the rule at the top of this file.
func PinLife(pinDir string, mountedHere bool) Pins {
	var st unix.Stat_t
	if err := unix.Stat(pinDir, &st); err != nil {
		return Pins{State: PinsUnknown, Reason: fmt.Sprintf("cannot stat %s: %v", pinDir, err)}
	}
	dev := fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	self := procSelf()
	if ino, err := nsInode(self + "/ns/mnt"); err == nil && ino == initMountNamespace {
		return Pins{State: PinsPersistent, Reason: "the agent runs in the host's initial mount namespace"}
	}
	hostPID := false
	if ino, err := nsInode(self + "/ns/pid"); err == nil && ino == initPIDNamespace {
		hostPID = true
	}
	pid1, err := bpfDevices("/proc/1/mountinfo")
	switch {
	case err != nil && hostPID:
		return Pins{State: PinsUnknown, Reason: fmt.Sprintf("cannot read PID 1's mounts: %v", err)}
	case hostPID && pid1[dev]:
		return Pins{State: PinsPersistent, Reason: "the host's bpffs: PID 1's mount namespace has it mounted"}
	case hostPID:
		return Pins{State: PinsEphemeral, Reason: "this bpffs is mounted in the agent's own mount namespace only, not in the host's " +
			"(as under `ip netns exec`, which mounts /sys anew, or `unshare -m`): it and the pins go when that namespace's last process exits"}
	case mountedHere:
		return Pins{State: PinsEphemeral, Reason: "the agent mounted this bpffs itself, in its container's mount namespace: it and the pins go with the container"}
	case err == nil && !pid1[dev]:
		return Pins{State: PinsEphemeral, Reason: "this bpffs is mounted in the agent's own mount namespace only, not even in its container's"}
	}
	return Pins{State: PinsUnknown, Reason: "the agent runs in a PID namespace of its own (a container) and cannot see the host's mounts; " +
		"it takes this bpffs, which it did not mount, for the host's (-v /sys/fs/bpf:/sys/fs/bpf)"}
}

// bpfDevices returns the devices (major:minor) of the bpf mounts in a
// mountinfo file.
func bpfDevices(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseBPFDevices(f)
}

// parseBPFDevices reads mountinfo lines (proc(5)): ID, parent ID,
// major:minor, root, mount point, options, optional fields, "-", type,
// source, super options.
func parseBPFDevices(r io.Reader) (map[string]bool, error) {
	devs := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields := strings.Fields(pre)
		if !ok || len(fields) < 5 || !strings.HasPrefix(post, "bpf ") {
			continue
		}
		if maj, min, ok := strings.Cut(fields[2], ":"); ok {
			if _, err := strconv.Atoi(maj); err == nil {
				if _, err := strconv.Atoi(min); err == nil {
					devs[fields[2]] = true
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return devs, nil
}
