//go:build !linux

package daemon

import "errors"

// openKernel reports that the BPF data path needs Linux.
func openKernel(kernelOptions) (kernel, error) {
	return nil, errors.New("the BPF data path needs Linux")
}

// cgroupVeths reports that selecting workloads by cgroup needs Linux.
func cgroupVeths(string) ([]int, error) {
	return nil, errors.New("resolve cgroup: selecting workloads by cgroup needs Linux")
}
