package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	hubadmin "github.com/sluicehq/sluice/agent/hub/admin"
	"github.com/sluicehq/sluice/agent/hub/authority"
)

// parseAttributes turns K=V flags into a map; a bare K means K=true.
func parseAttributes(list []string) map[string]string {
	kv := map[string]string{}
	for _, a := range list {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			v = "true"
		}
		kv[k] = v
	}
	return kv
}

func memberCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "member",
		Short: "List, revoke and re-attribute enrolled nodes (on the hub's machine, through its admin socket)",
		Long: `Manage the project's members through the running hub's admin socket, on the hub's
machine. A change takes effect at once: the hub tells every connected agent, which
re-check their policies, update their kernel maps and close the channels that lost
their permission.`,
		Example: `  agentctl member list --project ./project
  agentctl member revoke 5f0c6a3e9b1d4c2a8e7f60b1c2d3e4f5 --project ./project`,
	}
	var socket, project string
	cmd.PersistentFlags().StringVar(&project, "project", "", "project directory of the running hub or authority: its admin socket is authority.sock there (agent authority), else hub.sock (agent hub)")
	cmd.PersistentFlags().StringVar(&socket, "hub-admin", "", "unix socket of the hub's admin API, instead of --project (default: $SLUICE_HUB_ADMIN)")
	admin := func() (*hubadmin.Client, error) { return hubAdmin(socket, project) }
	memberNames := func(ctx context.Context) ([]string, error) {
		a, err := admin()
		if err != nil {
			return nil, err
		}
		ms, err := a.Members(ctx)
		return namesOf(ms, func(m authority.Member) string { return m.NodeID }), err
	}

	var format string
	list := &cobra.Command{
		Use: "list", Short: "List members", Args: cobra.NoArgs,
		Example: "  agentctl member list --project ./project -o yaml\n  SLUICE_HUB_ADMIN=/run/sluice/hub.sock agentctl member list",
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := admin()
			if err != nil {
				return err
			}
			ms, err := a.Members(cmd.Context())
			if err != nil {
				return err
			}
			return e.emit(format, ms, func(w io.Writer) { printMembers(w, ms) })
		},
	}
	outputFlag(list, &format)

	revoke := &cobra.Command{
		Use:               "revoke NODE",
		Short:             "Revoke a node: no credential again, and every agent stops trusting it at once",
		Example:           "  agentctl member revoke 5f0c6a3e9b1d4c2a8e7f60b1c2d3e4f5 --project ./project",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNames(memberNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := admin()
			if err != nil {
				return err
			}
			m, err := a.Revoke(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(e.out, "revoked %s\n", m.NodeID)
			return nil
		},
	}

	var attrs []string
	set := &cobra.Command{
		Use:   "set-attributes NODE [--attribute K=V]...",
		Short: "Replace a node's attributes; agents re-check their policies at once",
		Long: `Replace a node's attributes with those given (none given: no attributes). The
node's next credential carries them; connected agents are told at once and close
the channels their policies no longer allow. An attribute without =V is "true".`,
		Example:           "  agentctl member set-attributes 5f0c6a3e9b1d4c2a8e7f60b1c2d3e4f5 --attribute postgres-inlet --attribute region=eu --project ./project",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNames(memberNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := admin()
			if err != nil {
				return err
			}
			m, err := a.SetAttributes(cmd.Context(), args[0], parseAttributes(attrs))
			if err != nil {
				return err
			}
			fmt.Fprintf(e.out, "%s now has %s\n", m.NodeID, formatAttributes(m.Attributes))
			return nil
		},
	}
	set.Flags().StringArrayVar(&attrs, "attribute", nil, "attribute K=V (repeatable)")
	cmd.AddCommand(list, revoke, set)
	return cmd
}

func formatAttributes(a map[string]string) string {
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + a[k]
	}
	if len(parts) == 0 {
		return "(no attributes)"
	}
	return strings.Join(parts, ",")
}

func printMembers(w io.Writer, ms []authority.Member) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tGENERATION\tATTRIBUTES\tRELAYS\tENROLLED")
	for _, m := range ms {
		state := "member"
		if m.Revoked {
			state = "revoked"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", m.NodeID, state, m.Generation, formatAttributes(m.Attributes),
			strings.Join(m.Relays, ","), m.Enrolled.Format("2006-01-02 15:04:05Z07:00"))
	}
	tw.Flush()
}
