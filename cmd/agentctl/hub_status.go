package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	hubadmin "github.com/sluicehq/sluice/agent/hub/admin"
)

// hubStatusCommand is `agentctl hub status`: the cluster of hubs as the
// hub on the admin socket sees it (GET /v1/cluster).
func hubStatusCommand(e *env) *cobra.Command {
	var socket, project, format string
	cmd := &cobra.Command{
		Use:   "status (--project DIR | --hub-admin SOCKET) [-o json|yaml]",
		Short: "Show the cluster of hubs: etcd members, leader, each hub's agents, sessions and relay claims, health",
		Long: `Show where the running hub keeps the authority's records and the cluster of
hubs that share them, as this hub sees it: the etcd members and which one
leads, whether this hub reaches a quorum (healthy: it can issue), each hub's
agents (control connections), data sessions waiting for their peer and relay
names, and which hubs' agents hold each relay name. A hub cut off from the
majority says so and shows its last view. A hub on its own hub.db
(agent hub --store bolt) has no cluster.`,
		Example: `  agentctl hub status --project ./project
  agentctl hub status --hub-admin /run/sluice/hub.sock -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := hubAdmin(socket, project)
			if err != nil {
				return err
			}
			st, err := a.Cluster(cmd.Context())
			if err != nil {
				return fmt.Errorf("hub status: %w", err)
			}
			return e.emit(format, st, func(w io.Writer) { printClusterStatus(w, st) })
		},
	}
	cmd.Flags().StringVar(&project, "project", "", "project directory of the running hub: its admin socket is hub.sock there")
	cmd.Flags().StringVar(&socket, "hub-admin", "", "unix socket of the hub's admin API, instead of --project (default: $SLUICE_HUB_ADMIN)")
	outputFlag(cmd, &format)
	return cmd
}

func printClusterStatus(w io.Writer, st *hubadmin.ClusterStatus) {
	health := "healthy (reaches a quorum: issues credentials, redeems tickets)"
	if !st.Healthy {
		health = "NO QUORUM: refuses to issue until it reaches the majority (" + st.Error + ")"
	}
	leader := st.Leader
	if leader == "" {
		leader = "none known"
	}
	fmt.Fprintf(w, "store:      %s\nhub:        %s\nhealth:     %s\nleader:     %s\ngeneration: %d\n\n", st.Store, st.Hub, health, leader, st.Generation)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tID\tLEADER\tLIVE\tPEER URLS")
	for _, m := range st.Members {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%s\n", m.Name, m.ID, m.Leader, m.Live, strings.Join(m.PeerURLs, ","))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HUB\tLISTEN\tAGENTS\tSESSIONS\tGENERATION\tRELAYS\tUPDATED")
	for _, h := range st.Hubs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s ago\n", h.Name, h.Listen, h.Agents, h.Sessions, h.Generation,
			strings.Join(h.Relays, ","), time.Since(h.Updated).Round(time.Second))
	}
	tw.Flush()
	if len(st.Claims) > 0 {
		fmt.Fprintln(w)
		names := make([]string, 0, len(st.Claims))
		for n := range st.Claims {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			fmt.Fprintf(w, "relay %s: held on %s\n", n, strings.Join(st.Claims[n], ", "))
		}
	}
}
