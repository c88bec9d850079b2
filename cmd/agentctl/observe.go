package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/agent/api/apitype"
)

func observeCommand(e *env) *cobra.Command {
	var (
		q      apitype.ObserveQuery
		format string
	)
	cmd := &cobra.Command{
		Use:   "observe",
		Short: "Stream the flow log: one event per connection opened, closed or refused",
		Long: `Stream the agent's flow log, as hubble observe does for Cilium: one event per
portal connection opened, closed (bytes each way, duration) or refused, with
who refused it and why: the kernel (a workload not allowed, a spoofed source,
a denied service, no agent listening), the local policy, the attribute
policy between the two agents, or a limit. Each event names the portal, the
direction (inlet or outlet), the peer node and its attributes, the local
workload, and the client and target addresses.

By default it follows new events until interrupted; --last N first prints the
newest N events the agent kept (a bounded ring), and --follow=false stops
there. An observer that reads too slowly loses events rather than slowing
the portals: a "lost" event says how many. See docs/observe.md.`,
		Example: `  agentctl observe
  agentctl observe --verdict refused
  agentctl observe --portal db --last 20 --follow=false -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "text" && format != "json" {
				return fmt.Errorf("--output %q: want text or json", format)
			}
			if q.Verdict != "" && q.Verdict != "allowed" && q.Verdict != "refused" {
				return fmt.Errorf("--verdict %q: want allowed or refused", q.Verdict)
			}
			if q.Last < 0 {
				return fmt.Errorf("--last %d: want 0 or more", q.Last)
			}
			enc := json.NewEncoder(e.out)
			return e.client().Observe(cmd.Context(), q, func(ev apitype.FlowEvent) error {
				if format == "json" {
					return enc.Encode(ev)
				}
				_, err := io.WriteString(e.out, formatFlow(ev)+"\n")
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&q.Portal, "portal", "", "only events of this inlet or outlet")
	f.StringVar(&q.Verdict, "verdict", "", "only allowed or only refused connections")
	f.StringVar(&q.Workload, "workload", "", "only connections from this local workload")
	f.StringVar(&q.Peer, "peer", "", "only connections with this peer node (its ID)")
	f.IntVar(&q.Last, "last", 0, "first print the newest `N` recorded events")
	f.BoolVar(&q.Follow, "follow", true, "keep streaming new events (--follow=false: print --last and stop)")
	f.StringVarP(&format, "output", "o", "text", "output format: text, or json (one object per line)")
	return cmd
}

// formatFlow is an event's readable line.
func formatFlow(ev apitype.FlowEvent) string {
	ts := ev.Time.Local().Format("15:04:05.000")
	if ev.Type == "lost" {
		return fmt.Sprintf("%s LOST %d events: this observer read too slowly", ts, ev.Lost)
	}
	var b strings.Builder
	// open and close are allowed connections; refused says so.
	fmt.Fprintf(&b, "%s %-7s %s/%s %s -> %s", ts, strings.ToUpper(ev.Type),
		ev.Direction, ev.Portal, orDash(ev.Client), orDash(ev.Target))
	if ev.Workload != "" {
		fmt.Fprintf(&b, " workload=%s", ev.Workload)
	}
	if ev.Peer != "" {
		fmt.Fprintf(&b, " peer=%s", ev.Peer)
		if len(ev.PeerAttributes) > 0 {
			var kv []string
			for _, k := range slices.Sorted(maps.Keys(ev.PeerAttributes)) {
				kv = append(kv, k+"="+ev.PeerAttributes[k])
			}
			fmt.Fprintf(&b, "{%s}", strings.Join(kv, ","))
		}
	}
	if ev.Type == "close" {
		fmt.Fprintf(&b, " sent=%d received=%d duration=%s", ev.BytesSent, ev.BytesReceived,
			(time.Duration(ev.Duration * float64(time.Second))).Round(time.Millisecond))
	}
	if ev.By != "" {
		fmt.Fprintf(&b, " by=%q", ev.By)
	}
	if ev.Reason != "" {
		fmt.Fprintf(&b, " reason=%q", ev.Reason)
	}
	if ev.Error != "" {
		fmt.Fprintf(&b, " error=%q", ev.Error)
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
