package main

import (
	"fmt"
	"io"
	"time"

	"github.com/sluicehq/sluice/agent/api/apitype"
)

// printPeers prints the path of the inlets' channels to each peer agent:
// direct or through the hub, since when, the newest channel's round trip
// and the channels open by path (docs/direct-paths.md).
func printPeers(w io.Writer, ps []apitype.PeerPath, c apitype.DirectCounters) {
	table(w, "PEER\tPATH\tSINCE\tRTT\tDIRECT\tRELAYED\tNEXT DIRECT ATTEMPT", func(tw io.Writer) {
		for _, p := range ps {
			next := "-"
			if !p.NextAttempt.IsZero() {
				next = "in " + time.Until(p.NextAttempt).Round(time.Second).String()
			}
			rtt := "-"
			if p.RTT > 0 {
				rtt = p.RTT.Round(time.Microsecond).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", p.Node, p.Path, p.Since.Format(time.RFC3339), rtt,
				p.DirectChannels, p.RelayedChannels, next)
		}
	})
	fmt.Fprintf(w, "Channels opened: %d direct, %d through the hub; direct attempts: %d made, %d fell back, %d not offered; %d broke\n",
		c.ChannelsDirect, c.ChannelsRelayed, c.AttemptsOK, c.AttemptsFailed, c.NotOffered, c.Breaks)
}
