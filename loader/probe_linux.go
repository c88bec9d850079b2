package loader

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// Feature is one kernel feature the data path needs, and whether it is there.
type Feature struct {
	Name string `json:"name"`
	Err  error  `json:"-"`
	OK   bool   `json:"ok"`
	Why  string `json:"why,omitempty"`
}

// Probe checks what the data path needs of the kernel: the BPF syscall, TC
// programs and the helpers they call, the map types, BTF, TCX (else clsact)
// and cgroup v2; and what the hub's sockmap relay needs. It needs root for most answers.
func Probe() []Feature {
	var out []Feature
	add := func(name string, err error) {
		f := Feature{Name: name, Err: err, OK: err == nil}
		if err != nil {
			f.Why = err.Error()
		}
		out = append(out, f)
	}
	add(bpfSyscallFeature, features.HaveProgramType(ebpf.SchedCLS))
	for _, h := range []struct {
		name string
		fn   asm.BuiltinFunc
	}{
		{"helper bpf_sk_assign", asm.FnSkAssign},
		{"helper bpf_skc_lookup_tcp", asm.FnSkcLookupTcp},
		{"helper bpf_redirect", asm.FnRedirect},
		{"helper bpf_skb_change_tail", asm.FnSkbChangeTail},
		{"helper bpf_csum_diff", asm.FnCsumDiff},
	} {
		add(h.name, features.HaveProgramHelper(ebpf.SchedCLS, h.fn))
	}
	add("LRU hash and per-CPU array maps", errors.Join(features.HaveMapType(ebpf.LRUHash), features.HaveMapType(ebpf.PerCPUArray)))
	_, err := os.Stat("/sys/kernel/btf/vmlinux")
	add("BTF (/sys/kernel/btf/vmlinux)", err)
	add("TCX links (else clsact)", haveTCX())
	add("cgroup v2", haveCgroup2())
	add(accelFeature, errors.Join(features.HaveProgramType(ebpf.SockOps), features.HaveProgramType(ebpf.SkMsg),
		features.HaveMapType(ebpf.SockHash), features.HaveProgramHelper(ebpf.SkMsg, asm.FnGetNetnsCookie),
		features.HaveProgramHelper(ebpf.SockOps, asm.FnGetNetnsCookie)))
	add(relayFeature, haveRelay())
	return out
}

// bpfSyscallFeature is the first probe: the bpf syscall, loading a program.
const bpfSyscallFeature = "bpf syscall and TC programs"

// accelFeature names what socket acceleration needs; it is optional.
const accelFeature = "socket acceleration (sockops, sk_msg, sockhash, bpf_get_netns_cookie)"

// Missing returns the features the data path cannot work without, joined
// into one error that names them, or nil. BTF, TCX and cgroup v2 are not
// required: the programs need no CO-RE, clsact replaces TCX, cgroup v2
// and the rest of socket acceleration only make transparent inlets faster,
// and the sockmap relay is the hub's (which splices without it).
//
// When the kernel refused the bpf syscall itself with EPERM, the process
// lacks privileges, not the kernel features: Missing says so with
// ErrNoPrivilege alone, since no other answer of the probe can be trusted.
func Missing(fs []Feature) error {
	for _, f := range fs {
		if f.Name == bpfSyscallFeature && !f.OK && errors.Is(f.Err, unix.EPERM) {
			return fmt.Errorf("probe the kernel: the bpf syscall was refused: %w: %w", unix.EPERM, ErrNoPrivilege)
		}
	}
	var names []string
	for _, f := range fs {
		optional := strings.HasPrefix(f.Name, "BTF") || strings.HasPrefix(f.Name, "TCX") || f.Name == "cgroup v2" || f.Name == accelFeature || f.Name == relayFeature
		if !f.OK && !optional {
			names = append(names, fmt.Sprintf("%s (%v)", f.Name, f.Err))
		}
	}
	if len(names) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w", strings.Join(names, "; "), ErrNotSupported)
}

func haveTCX() error {
	// There is no cheap probe in the library's public API; TCX came with
	// the BPF_LINK_TYPE_TCX link in Linux 6.6.
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return err
	}
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	if major > 6 || (major == 6 && minor >= 6) {
		return nil
	}
	return fmt.Errorf("kernel %d.%d is older than 6.6: %w", major, minor, ebpf.ErrNotSupported)
}

func haveCgroup2() error {
	b, err := os.ReadFile(procSelf() + "/mountinfo")
	if err != nil {
		return err
	}
	if strings.Contains(string(b), " - cgroup2 ") {
		return nil
	}
	return errors.New("no cgroup2 mount")
}
