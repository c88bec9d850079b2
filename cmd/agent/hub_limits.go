package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/agent/hub"
)

// registerLimits adds the flags of the hub's limits (docs/hub.md).
func registerLimits(cmd *cobra.Command, l *hub.Limits) {
	f := cmd.Flags()
	f.IntVar(&l.Unauthenticated, "max-unauthenticated", hub.DefaultUnauthenticated,
		"connections that have not authenticated yet (TLS handshake and first message, or a data connection's token), in all; past it new ones are closed at once")
	f.IntVar(&l.PerSource, "max-unauthenticated-per-source", hub.DefaultPerSource,
		"of those, from one source (an IPv4 address or an IPv6 /64)")
	f.IntVar(&l.PerMemberSource, "max-unauthenticated-per-member-source", hub.DefaultPerMemberSource,
		"of those, from one source a member authenticated from in the last 24 hours (instead of --max-unauthenticated-per-source)")
	f.IntVar(&l.Reserved, "reserved-for-members", hub.DefaultReserved,
		"of --max-unauthenticated, the room only sources a member authenticated from in the last 24 hours may use")
	f.Float64Var(&l.DialRate, "dial-rate", hub.DefaultDialRate,
		"data sessions each node may ask for per second (token bucket); more are refused with code rate_limited")
	f.IntVar(&l.DialBurst, "dial-burst", hub.DefaultDialBurst,
		"data sessions each node may ask for at once (the bucket's size)")
	f.IntVar(&l.PendingPerNode, "max-pending-per-node", hub.DefaultPendingPerNode,
		"data sessions one node asked for that wait for their data connections")
	f.IntVar(&l.Pending, "max-pending", hub.DefaultPending,
		"data sessions waiting for their data connections, in all")
}

// checkLimits refuses a limit flag that is not positive: in hub.Limits
// zero means the default, which is not what `--max-pending 0` asks for.
func checkLimits(l hub.Limits) error {
	for _, f := range []struct {
		flag string
		v    float64
	}{
		{"--max-unauthenticated", float64(l.Unauthenticated)},
		{"--max-unauthenticated-per-source", float64(l.PerSource)},
		{"--max-unauthenticated-per-member-source", float64(l.PerMemberSource)},
		{"--reserved-for-members", float64(l.Reserved)},
		{"--dial-rate", l.DialRate},
		{"--dial-burst", float64(l.DialBurst)},
		{"--max-pending-per-node", float64(l.PendingPerNode)},
		{"--max-pending", float64(l.Pending)},
	} {
		if f.v <= 0 {
			return fmt.Errorf("%s %v: must be positive", f.flag, f.v)
		}
	}
	if err := l.Check(); err != nil {
		return fmt.Errorf("hub limits: %w", err)
	}
	return nil
}
