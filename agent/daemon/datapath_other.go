//go:build !linux

package daemon

import "errors"

// openKernel reports that the BPF data path needs Linux.
func openKernel(kernelOptions) (kernel, error) {
	return nil, errors.New("the BPF data path needs Linux")
}
