package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/agent/api/apitype"
)

func workloadCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "workload", Short: "Name local containers and give them the attributes --allow-local policies see",
		Example: "  agentctl workload create analytics --address 10.10.0.2 --attribute app=analytics\n  agentctl workload list"}
	var (
		w            apitype.Workload
		attrs        []string
		createFormat string
	)
	create := &cobra.Command{
		Use:   "create NAME (--address IP | --interface DEV | --cgroup PATH) [--attribute K=V]...",
		Short: "Declare a local container, by its IPv4 address, its host-side veth or its cgroup",
		Long: `Declare a local workload (container) for transparent inlets. Select it by
exactly one of --address (the container's IPv4 address), --interface (its
host-side veth) or --cgroup (the absolute path of a cgroup v2 directory, such
as /sys/fs/cgroup/system.slice/app.service). A cgroup is resolved by the agent:
the processes in that directory (not in its child cgroups), their network
namespaces, and the host-side peers of the veths in them; it is resolved again
every 2 seconds, so containers whose processes join later are covered.
Inlets' --allow-local policies are evaluated over its --attribute values; an
attribute without =V is set to "true". Connections from containers that no
workload names see no attributes.

A workload named by --address is bound to the host-side veth of the one
container that has that address configured (read inside the container's
network namespace, never from ARP): the create fails if no container or
several have it. The kernel then resets connections to inlets from that
address on any other interface (anti-spoofing, counted "spoofed" in
'agentctl datapath status'). The binding does not move when another
container claims the address later; if the bound veth goes (the container
was restarted), the workload is unresolved until exactly one new veth has the
address ('workload list' says why meanwhile).`,
		Example: `  agentctl workload create analytics --address 10.10.0.2 --attribute app=analytics
  agentctl workload create jobs --cgroup /sys/fs/cgroup/system.slice/jobs.service --attribute app=jobs
  agentctl workload create batch --interface veth1a2b --attribute app=batch --attribute tier`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			w.Name = args[0]
			w.Attributes = parseAttributes(attrs)
			info, err := e.client().CreateWorkload(cmd.Context(), w)
			if err != nil {
				return err
			}
			return e.emit(createFormat, info, func(out io.Writer) {
				bound := ""
				if info.Bound != nil {
					bound = " on " + info.Bound.String()
				}
				fmt.Fprintf(out, "workload %s created: %s%s, attributes %s\n", info.Name, selector(info.Workload), bound, workloadAttributes(info.Attributes))
			})
		},
	}
	outputFlag(create, &createFormat)
	create.Flags().StringVar(&w.Address, "address", "", "the container's IPv4 address")
	create.Flags().StringVar(&w.Interface, "interface", "", "the container's host-side veth")
	create.Flags().StringVar(&w.Cgroup, "cgroup", "", "a cgroup v2 directory (absolute path) of the container's processes")
	create.Flags().StringArrayVar(&attrs, "attribute", nil, "attribute K=V (repeatable)")
	var format string
	list := &cobra.Command{
		Use: "list", Short: "List local workloads", Args: cobra.NoArgs,
		Example: "  agentctl workload list -o yaml",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ws, err := e.client().Workloads(cmd.Context())
			if err != nil {
				return err
			}
			return e.emit(format, ws, func(w io.Writer) {
				table(w, "NAME\tNUMBER\tSELECTOR\tATTRIBUTES\tBOUND TO\tSOURCE", func(tw io.Writer) {
					for _, wl := range ws {
						fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", wl.Name, wl.Number, selector(wl.Workload), workloadAttributes(wl.Attributes), boundTo(wl), sourceOf(wl.Workload))
					}
				})
			})
		},
	}
	outputFlag(list, &format)
	cmd.AddCommand(create, list, deleteCommand("workload", "analytics", e.workloadNames, func(cmd *cobra.Command, name string) error {
		return e.client().DeleteWorkload(cmd.Context(), name)
	}))
	return cmd
}

func selector(w apitype.Workload) string {
	switch {
	case w.Interface != "":
		return "interface " + w.Interface
	case w.Cgroup != "":
		return "cgroup " + w.Cgroup
	}
	return "address " + w.Address
}

// sourceOf says who keeps a workload: "api" for the operator (the local
// API or the configuration file), else its source, e.g. "kubernetes".
func sourceOf(w apitype.Workload) string {
	if w.Source == "" {
		return "api"
	}
	return w.Source
}

// boundTo says where a workload named by address is bound, or why it is not.
func boundTo(w apitype.WorkloadInfo) string {
	switch {
	case w.Address == "":
		return "-"
	case w.Bound != nil:
		return w.Bound.String()
	case w.Unresolved != "":
		return "unresolved: " + w.Unresolved
	}
	return "unbound (the data path is not running)"
}

func workloadAttributes(attrs map[string]string) string {
	kv := make([]string, 0, len(attrs))
	for k, v := range attrs {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	if len(kv) == 0 {
		return "-"
	}
	return strings.Join(kv, " ")
}

func datapathCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "datapath", Short: "Inspect the BPF data path that carries transparent inlets and checks --allow-local",
		Example: "  agentctl datapath status"}
	var format string
	status := &cobra.Command{
		Use:   "status",
		Short: "Show attached programs, map fill and per-portal kernel counters",
		Long: `Show the attached programs, how full the maps are, and for each inlet with
--allow-local (transparent, or explicit) its kernel counters: connections
steered to the agent, resets sent (refused; of those, no agent listening, and
spoofed: the source address is bound to another interface than the one the
packet came in on), and the packets and bytes allowed through.`,
		Example: "  agentctl datapath status\n  agentctl datapath status -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := e.client().Datapath(cmd.Context())
			if err != nil {
				return err
			}
			return e.emit(format, st, func(w io.Writer) { printDatapath(w, st) })
		},
	}
	outputFlag(status, &format)
	cmd.AddCommand(status)
	return cmd
}

func printDatapath(w io.Writer, st apitype.DatapathStatus) {
	if !st.Enabled {
		fmt.Fprintf(w, "data path: off (%s)\n", st.Reason)
		return
	}
	fmt.Fprintf(w, "data path: on, pins in %s, transparent listener %s\n", st.PinDir, st.Listener)
	if st.Pins != nil {
		fmt.Fprintf(w, "pins: %s\n", st.Pins)
	}
	if st.Acceleration == "on" {
		fmt.Fprintf(w, "socket acceleration: on, %d connections accelerated\n", st.Accelerated)
	} else if st.Acceleration != "" {
		fmt.Fprintf(w, "socket acceleration: %s\n", st.Acceleration)
	}
	if st.Error != "" {
		fmt.Fprintf(w, "reading kernel state: %s\n", st.Error)
	}
	fmt.Fprintln(w)
	table(w, "DEVICE\tROLE\tHOOK\tPROGRAM\tLINK", func(tw io.Writer) {
		for _, a := range st.Attachments {
			link := "-"
			if a.Link != 0 {
				link = fmt.Sprint(a.Link)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", a.Device, a.Role, a.Hook, a.Program, link)
		}
	})
	fmt.Fprintln(w)
	table(w, "MAP\tENTRIES/MAX", func(tw io.Writer) {
		for _, m := range st.Maps {
			fmt.Fprintf(tw, "%s\t%d/%d\n", m.Name, m.Entries, m.Max)
		}
	})
	fmt.Fprintln(w)
	table(w, "INLET\tKIND\tSERVICE\tPORTAL\tSTEERED\tREFUSED\tNO LISTENER\tSPOOFED\tPACKETS\tBYTES", func(tw io.Writer) {
		for _, p := range st.Portals {
			c := p.Counters
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", p.Inlet, p.Kind, p.Service, p.Portal,
				c.Steered, c.Refused, c.NoListener, c.Spoofed, c.Packets, c.Bytes)
		}
	})
}
