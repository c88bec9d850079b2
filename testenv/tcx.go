package testenv

import (
	"errors"
	"fmt"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Attach types of TCX (include/uapi/linux/bpf.h, enum bpf_attach_type).
const (
	bpfTCXIngress = 46 // BPF_TCX_INGRESS
	bpfTCXEgress  = 47 // BPF_TCX_EGRESS
)

// progQueryAttr is the BPF_PROG_QUERY part of union bpf_attr
// (include/uapi/linux/bpf.h), as of Linux 6.6.
type progQueryAttr struct {
	targetIfindex   uint32
	attachType      uint32
	queryFlags      uint32
	attachFlags     uint32
	progIDs         uint64
	count           uint32
	_               uint32
	progAttachFlags uint64
	linkIDs         uint64
	linkAttachFlags uint64
	revision        uint64
}

// TCXPrograms counts the BPF programs attached with TCX to the link ifname
// in ns, on ingress and on egress. A kernel without TCX (before 6.6) has
// none. It asks the kernel directly (BPF_PROG_QUERY), so it needs no tool.
func (ns *NS) TCXPrograms(ifname string) (ingress, egress int, err error) {
	err = ns.Do(func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		if ingress, err = tcxCount(ifc.Index, bpfTCXIngress); err != nil {
			return err
		}
		egress, err = tcxCount(ifc.Index, bpfTCXEgress)
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("query tcx programs of %s in %s: %w", ifname, ns.name, err)
	}
	return ingress, egress, nil
}

// tcxCount queries how many programs are attached to ifindex with the TCX
// attach type typ.
func tcxCount(ifindex int, typ uint32) (int, error) {
	attr := progQueryAttr{targetIfindex: uint32(ifindex), attachType: typ}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_QUERY, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	switch {
	case errno == 0:
		return int(attr.count), nil
	case errors.Is(errno, unix.EINVAL):
		return 0, nil // no TCX in this kernel, so nothing attached with it
	default:
		return 0, errno
	}
}
