//go:build !linux

package kube

import (
	"errors"
	"net/netip"

	"github.com/sluicehq/sluice/agent/daemon"
)

// ErrNoInterface means no host-side interface of a pod could be found for
// its address (yet).
var ErrNoInterface = errors.New("no host-side interface found for the pod's address")

// HostInterface reports that finding a pod's interface needs Linux.
func HostInterface(netip.Addr) (*daemon.Binding, error) {
	return nil, errors.New("find a pod's host-side interface: needs Linux")
}
