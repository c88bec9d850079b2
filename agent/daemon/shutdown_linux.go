//go:build linux

package daemon

import (
	"errors"
	"net"
)

// stopAccepting closes the transparent listener and clears its address:
// from then on the pinned programs refuse new connections to transparent
// inlets in the kernel (no agent listening). Established connections go
// on: the programs hand their segments to their own sockets.
func (k *bpfKernel) stopAccepting() error {
	err := k.ln.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return errors.Join(err, k.maps.Listener.Clear())
}
