package daemon

import "github.com/sluicehq/sluice/agent/capture"

// Taps is where captures subscribe to the portals' bytes (agentctl capture).
func (a *Agent) Taps() *capture.Taps { return &a.taps }
