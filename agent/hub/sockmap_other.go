//go:build !linux

package hub

import (
	"context"
	"fmt"

	"github.com/sluicehq/sluice/loader"
)

// DefaultBacklogMax is SockmapOptions.BacklogMax's default.
const DefaultBacklogMax = 64 << 20

// SockmapOptions configure OpenSockmap.
type SockmapOptions struct {
	BacklogMax uint64
}

// Sockmap is the kernel relay of a hub; it needs Linux.
type Sockmap struct{}

// OpenSockmap reports that the kernel relay needs Linux.
func OpenSockmap(SockmapOptions) (*Sockmap, error) {
	return nil, fmt.Errorf("open sockmap relay: it needs Linux: %w", loader.ErrRelayNotSupported)
}

// Close does nothing.
func (*Sockmap) Close() error { return nil }

// relayKernel cannot run: no Sockmap opens here.
func (h *Hub) relayKernel(_ context.Context, p *pairing) int64 { p.abort(); return 0 }
