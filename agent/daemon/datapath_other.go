//go:build !linux

package daemon

import (
	"errors"
	"net/netip"
)

// openKernel reports that the BPF data path needs Linux.
func openKernel(kernelOptions) (kernel, error) {
	return nil, errors.New("the BPF data path needs Linux")
}

// cgroupVeths reports that selecting workloads by cgroup needs Linux.
func cgroupVeths(string) ([]int, error) {
	return nil, errors.New("resolve cgroup: selecting workloads by cgroup needs Linux")
}

// hostSystem reports that reading interfaces and container addresses needs
// Linux.
var hostSystem = system{
	Interfaces:     func() ([]int, error) { return nil, errors.New("list interfaces: needs Linux") },
	ContainerVeths: func() ([]containerVeth, error) { return nil, errors.New("list container addresses: needs Linux") },
	HostAddrs:      func() ([]netip.Addr, error) { return nil, errors.New("list host addresses: needs Linux") },
}
