package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/agent/api/apitype"
)

func table(w io.Writer, header string, rows func(tw io.Writer)) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	rows(tw)
	tw.Flush()
}

// deleteCommand is `agentctl NOUN delete NAME`; NAME completes with names.
func deleteCommand(noun, example string, names func(context.Context) ([]string, error), del func(cmd *cobra.Command, name string) error) *cobra.Command {
	return &cobra.Command{
		Use:               "delete NAME",
		Short:             "Delete a " + noun,
		Example:           "  agentctl " + noun + " delete " + example,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNames(names),
		RunE:              func(cmd *cobra.Command, args []string) error { return del(cmd, args[0]) },
	}
}

func relayCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "relay", Short: "Claim relay names at the hub, so inlets elsewhere can reach this agent",
		Example: "  agentctl relay create postgres\n  agentctl relay list"}
	var createFormat string
	create := &cobra.Command{
		Use:     "create NAME",
		Short:   "Claim relay NAME at the hub (the agent's ticket must have allowed it)",
		Example: "  agentctl relay create postgres",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := e.client().CreateRelay(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return e.emit(createFormat, r, func(w io.Writer) { fmt.Fprintf(w, "relay %s claimed\n", r.Name) })
		},
	}
	outputFlag(create, &createFormat)
	var format string
	list := &cobra.Command{
		Use: "list", Short: "List this agent's relays", Args: cobra.NoArgs,
		Example: "  agentctl relay list -o json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			rs, err := e.client().Relays(cmd.Context())
			if err != nil {
				return err
			}
			return e.emit(format, rs, func(w io.Writer) { printRelays(w, rs) })
		},
	}
	outputFlag(list, &format)
	cmd.AddCommand(create, list, deleteCommand("relay", "postgres", e.relayNames, func(cmd *cobra.Command, name string) error {
		return e.client().DeleteRelay(cmd.Context(), name)
	}))
	return cmd
}

func outletCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "tcp-outlet", Short: "Manage TCP outlets: where portal connections come out",
		Example: "  agentctl tcp-outlet create --name pg --to postgres:5432 --allow postgres-inlet\n  agentctl tcp-outlet list"}
	var (
		spec         apitype.OutletSpec
		createFormat string
	)
	create := &cobra.Command{
		Use:   "create --to HOST:PORT --allow EXPR [--name N]",
		Short: "Create an outlet that connects to --to for peers --allow permits",
		Long: `Create a TCP outlet. Connections from inlets whose credentials satisfy --allow
come out of this agent as TCP connections to --to. --allow is a policy over the
inlet agent's attributes: NAME alone means NAME == "true"; see docs/policy.md.

The agent looks the host name of --to up when it creates the outlet (for up to
3 seconds) and refuses one that does not resolve, so a typo fails now rather
than at every connection; --no-resolve creates it anyway, for a name that
resolves later (a container not started yet). Each connection looks it up
again.`,
		Example: `  agentctl tcp-outlet create --name pg --to postgres:5432 --allow postgres-inlet
  agentctl tcp-outlet create --to 10.20.0.5:5432 --allow 'postgres-inlet and region == "eu"' -o json
  agentctl tcp-outlet create --name pg --to db.internal:5432 --no-resolve --allow postgres-inlet`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := e.client().CreateOutlet(cmd.Context(), spec)
			if err != nil {
				return err
			}
			return e.emit(createFormat, o, func(w io.Writer) {
				fmt.Fprintf(w, "tcp-outlet %s created: to %s, allow %s\n", o.Name, o.To, o.Allow)
			})
		},
	}
	outputFlag(create, &createFormat)
	create.Flags().StringVar(&spec.To, "to", "", "target HOST:PORT (required); the agent looks HOST up now and refuses a name that does not resolve")
	create.Flags().BoolVar(&spec.NoResolve, "no-resolve", false, "create the outlet even if --to's host name does not resolve yet (it is looked up at each connection)")
	create.Flags().StringVar(&spec.Allow, "allow", "", "policy on the inlet's attributes (required; default deny)")
	create.Flags().StringVar(&spec.Name, "name", "", "outlet name (default outlet-N)")
	var format string
	list := &cobra.Command{
		Use: "list", Short: "List outlets", Args: cobra.NoArgs,
		Example: "  agentctl tcp-outlet list -o yaml",
		RunE: func(cmd *cobra.Command, _ []string) error {
			os, err := e.client().Outlets(cmd.Context())
			if err != nil {
				return err
			}
			return e.emit(format, os, func(w io.Writer) { printOutlets(w, os) })
		},
	}
	outputFlag(list, &format)
	cmd.AddCommand(create, list, deleteCommand("tcp-outlet", "pg", e.outletNames, func(cmd *cobra.Command, name string) error {
		return e.client().DeleteOutlet(cmd.Context(), name)
	}))
	return cmd
}

func inletCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "tcp-inlet", Short: "Manage TCP inlets: where local apps connect",
		Example: "  agentctl tcp-inlet create --name pg --from 127.0.0.1:15432 --via postgres --allow postgres-outlet\n  agentctl tcp-inlet list"}
	var (
		spec         apitype.InletSpec
		createFormat string
	)
	create := &cobra.Command{
		Use:   "create --from ADDR:PORT (--via RELAYNAME | --direct HOST:PORT) --allow EXPR [--name N] [--outlet NAME] [--outlet-node ID] [--allow-local EXPR] [--transparent]",
		Short: "Create an inlet listening on --from that reaches the outlet behind relay --via",
		Long: `Create a TCP inlet. It listens on --from; each connection is carried through
the hub to the agent that claimed relay --via, over a mutually authenticated TLS
1.3 channel, and comes out of that agent's outlet (--outlet, or its only one).
--allow is a policy over the outlet agent's attributes; see docs/policy.md.
The hub says which node owns the relay; --outlet-node ID pins it instead, so
that a channel to any other node is refused even if it has those attributes.

Without --allow-local, an explicit inlet admits anyone who can reach --from:
every container whose network routes to that address, the host itself, and,
on 0.0.0.0, other hosts that reach one of its addresses. With --allow-local
EXPR (a policy over the local workload's attributes, see 'agentctl workload';
needs the agent's BPF data path, an IPv4 --from or 0.0.0.0, and a port) only
the containers it permits get through: the kernel resets the others, and
connections with a spoofed source address, on the container's veth, and the
agent checks each accepted connection again (connections that came through
no container veth, such as from the host itself, are the unknown workload,
which sees no attributes). Bind it to the container bridge's address, e.g.
--from 10.10.0.1:15432, so that it is not reachable from other networks.

With --direct instead of --via the channel goes straight to an outlet agent
that accepts channels itself ('agent run --direct-listen'), without the hub:
for networks where the inlet can reach that host, and as the benchmarks'
reference. Authentication and policies are the same.

With --transparent the inlet listens nowhere: --from is a virtual service
address (IPv4:PORT) that no host owns, and local containers connect to it
directly. The agent's BPF data path steers their connections to the inlet
when --allow-local (required; a policy over the local workload's attributes,
see 'agentctl workload') permits the container, and resets them in the kernel
otherwise.`,
		Example: `  agentctl tcp-inlet create --name pg --from 127.0.0.1:15432 --via postgres --allow postgres-outlet
  agentctl tcp-inlet create --from 10.10.0.1:15432 --via postgres --allow postgres-outlet \
    --allow-local 'app == "analytics"'
  agentctl tcp-inlet create --transparent --from 10.200.0.10:5432 --via postgres \
    --allow postgres-outlet --allow-local 'app == "analytics"'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in, err := e.client().CreateInlet(cmd.Context(), spec)
			if err != nil {
				return err
			}
			return e.emit(createFormat, in, func(w io.Writer) { printInletCreated(w, in) })
		},
	}
	outputFlag(create, &createFormat)
	create.Flags().StringVar(&spec.From, "from", "", "listen ADDR:PORT, e.g. 0.0.0.0:15432 (required)")
	create.Flags().StringVar(&spec.Via, "via", "", "relay name of the outlet's agent (required, unless --direct)")
	create.Flags().StringVar(&spec.Direct, "direct", "", "HOST:PORT where the outlet's agent accepts channels without the hub (agent run --direct-listen), instead of --via")
	create.Flags().StringVar(&spec.Allow, "allow", "", "policy on the outlet agent's attributes (required; default deny)")
	create.Flags().StringVar(&spec.OutletNode, "outlet-node", "", "node ID the outlet's agent must have (agentctl status there): channels to any other node are refused, whatever the hub says owns the relay")
	create.Flags().StringVar(&spec.Name, "name", "", "inlet name (default inlet-N)")
	create.Flags().StringVar(&spec.Outlet, "outlet", "", "outlet name on the far agent (default: its only outlet)")
	create.Flags().BoolVar(&spec.Transparent, "transparent", false, "--from is a virtual service address that local containers reach through the BPF data path")
	create.Flags().StringVar(&spec.AllowLocal, "allow-local", "", "policy on the local workload's attributes (required with --transparent; without it an explicit inlet admits anyone who can reach --from)")
	var format string
	list := &cobra.Command{
		Use: "list", Short: "List inlets", Args: cobra.NoArgs,
		Example: "  agentctl tcp-inlet list -o json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ins, err := e.client().Inlets(cmd.Context())
			if err != nil {
				return err
			}
			return e.emit(format, ins, func(w io.Writer) { printInlets(w, ins) })
		},
	}
	outputFlag(list, &format)
	cmd.AddCommand(create, list, deleteCommand("tcp-inlet", "pg", e.inletNames, func(cmd *cobra.Command, name string) error {
		return e.client().DeleteInlet(cmd.Context(), name)
	}))
	return cmd
}

func printInletCreated(w io.Writer, in apitype.Inlet) {
	via := "via relay " + in.Via
	if in.Direct != "" {
		via = "direct to " + in.Direct
	}
	if in.Transparent {
		fmt.Fprintf(w, "tcp-inlet %s created: %s, %s, allow %s, allow local %s\n", in.Name, in.Listening, via, in.Allow, in.AllowLocal)
		return
	}
	local := ", anyone who can reach it"
	if in.AllowLocal != "" {
		local = ", allow local " + in.AllowLocal
	}
	fmt.Fprintf(w, "tcp-inlet %s created: listening on %s, %s, allow %s%s\n", in.Name, in.Listening, via, in.Allow, local)
}

// stateOf is an item's STATE column: running, or failed with why and when
// the agent tries again.
func stateOf(state, why string, next time.Time) string {
	if state != apitype.StateFailed {
		return state
	}
	if next.IsZero() {
		return "failed: " + why
	}
	return fmt.Sprintf("failed (next try in %s): %s", time.Until(next).Round(time.Second), why)
}

func printInlets(w io.Writer, ins []apitype.InletInfo) {
	table(w, "NAME\tLISTENING\tVIA\tALLOW\tACTIVE\tACCEPTED\tREFUSED\tFAILED\tBYTES IN/OUT\tSTATE", func(tw io.Writer) {
		for _, in := range ins {
			c := in.Counters
			via := in.Via
			if in.Direct != "" {
				via = "direct " + in.Direct
			}
			listening := in.Listening
			if listening == "" {
				listening = in.From
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d/%d\t%s\n", in.Name, listening, via, in.Allow,
				c.Active, c.Accepted, c.Refused, c.Failed, c.BytesIn, c.BytesOut, stateOf(in.State, in.Error, in.NextRetry))
		}
	})
}

func printOutlets(w io.Writer, os []apitype.OutletInfo) {
	table(w, "NAME\tTO\tALLOW\tACTIVE\tACCEPTED\tREFUSED\tFAILED\tBYTES IN/OUT\tSTATE", func(tw io.Writer) {
		for _, o := range os {
			c := o.Counters
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d/%d\t%s\n", o.Name, o.To, o.Allow,
				c.Active, c.Accepted, c.Refused, c.Failed, c.BytesIn, c.BytesOut, stateOf(o.State, o.Error, o.NextRetry))
		}
	})
}

// printRelays prints the relay names and whether the hub gave them to this
// agent (why not, and when it tries again).
func printRelays(w io.Writer, rs []apitype.RelayInfo) {
	table(w, "RELAY\tCLAIMED\tWHY NOT", func(tw io.Writer) {
		for _, r := range rs {
			why := r.Error
			if !r.Claimed && !r.NextRetry.IsZero() {
				why = fmt.Sprintf("(next try in %s) %s", time.Until(r.NextRetry).Round(time.Second), r.Error)
			}
			fmt.Fprintf(tw, "%s\t%v\t%s\n", r.Name, r.Claimed, why)
		}
	})
}

// printHubs prints the agent's links to the hubs of a project of several:
// the control link, and an outlet link to every other hub while the agent
// has relay names (docs/hub-cluster.md).
func printHubs(w io.Writer, hs []apitype.HubLink) {
	table(w, "HUB\tLINK\tSTATE\tRELAYS", func(tw io.Writer) {
		for _, h := range hs {
			state := "disconnected"
			switch {
			case h.Connected:
				state = "connected since " + h.Since.Format(time.RFC3339)
			case h.Role == "standby":
				state = "-"
			case h.LastError != "":
				state += " (" + h.LastError + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", h.Addr, h.Role, state, strings.Join(h.Relays, ","))
		}
	})
}

func statusCommand(e *env) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:     "status",
		Short:   "Show identity, attributes, credential expiry, hub link and portals",
		Example: "  agentctl status\n  agentctl status -o yaml\n  agentctl --agent /run/sluice/second.sock status",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := e.client().Status(cmd.Context())
			if err != nil {
				return err
			}
			return e.emit(format, st, func(w io.Writer) { printStatus(w, st) })
		},
	}
	outputFlag(cmd, &format)
	return cmd
}

func printStatus(w io.Writer, st apitype.Status) {
	names := make([]string, 0, len(st.Attributes))
	for k, v := range st.Attributes {
		names = append(names, k+"="+v)
	}
	sort.Strings(names)
	link := "disconnected"
	if st.Hub.Connected {
		link = "connected since " + st.Hub.Since.Format(time.RFC3339)
	}
	if st.Hub.LastError != "" && !st.Hub.Connected {
		link += " (" + st.Hub.LastError + ")"
	}
	fmt.Fprintf(w, "Node:        %s\nProject:     %s\nAttributes:  %s\n", st.Node, st.Project, strings.Join(names, " "))
	fmt.Fprintf(w, "Credential:  expires %s (in %s), generation %d\nHub:         %s, %s\nMembers:     heard up to generation %d\n\n",
		st.Credential.Expires.Format(time.RFC3339), st.Credential.ExpiresIn, st.Credential.Generation, st.Hub.Hub, link,
		st.Hub.MemberGeneration)
	if len(st.Hub.Hubs) > 0 {
		printHubs(w, st.Hub.Hubs)
		fmt.Fprintln(w)
	}
	printRelays(w, st.Relays)
	fmt.Fprintln(w)
	printInlets(w, st.Inlets)
	fmt.Fprintln(w)
	printOutlets(w, st.Outlets)
	fmt.Fprintln(w)
	printPeers(w, st.Peers, st.DirectPaths)
}
