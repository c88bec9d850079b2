package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/wire"

	"github.com/sluicehq/sluice/cmd/internal/cli"
)

func projectCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "project", Short: "Create projects (the hub's authority)",
		Example: "  agentctl project init --dir ./project --hub-address hub.example.com:4443"}
	var dir, hub string
	var initFormat string
	var existOK bool
	initCmd := &cobra.Command{
		Use:   "init --dir DIR --hub-address HOST:PORT",
		Short: "Create a project: authority key, hub certificate and project ID",
		Long: `Create a project in DIR: the authority's signing key and certificate, the hub's
key and a certificate for the host of --hub-address (the address agents dial),
the project ID, and the hub's empty database (hub.db). Keep DIR private: whoever
reads authority.key can enroll nodes. Back hub.db up with 'agentctl hub backup'.`,
		Example: `  agentctl project init --dir ./project --hub-address hub.example.com:4443
  agentctl project init --dir ./project --hub-address 127.0.0.1:4443   # all on one machine`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || hub == "" {
				return cli.Usagef("--dir and --hub-address are required, e.g. agentctl project init --dir ./project --hub-address hub.example.com:4443")
			}
			p, err := authority.Init(dir, hub)
			if errors.Is(err, authority.ErrProjectExists) && existOK {
				return keepProject(e, dir, hub)
			}
			if err != nil {
				return err
			}
			return e.emit(initFormat, projectInfo{ID: p.ID, Dir: dir, HubAddress: p.HubAddress}, func(w io.Writer) {
				fmt.Fprintf(w, "project %s created in %s (hub address %s)\n", p.ID, dir, p.HubAddress)
			})
		},
	}
	initCmd.Flags().StringVar(&dir, "dir", "", "directory to create the project in (required)")
	outputFlag(initCmd, &initFormat)
	initCmd.Flags().StringVar(&hub, "hub-address", "", "HOST:PORT that agents dial to reach the hub (required)")
	initCmd.Flags().BoolVar(&existOK, "exist-ok", false, "if DIR already holds a project for --hub-address, keep it and succeed (for a Kubernetes init container); another hub address is still an error")
	var out string
	export := &cobra.Command{
		Use:   "export-relay --dir DIR --out RELAYDIR",
		Short: "Copy what a relay of the project needs (never the authority's key) into a new directory",
		Long: `Copy into RELAYDIR, a new directory, what ` + "`agent hub --role relay`" + ` needs of the
project in DIR: project.json, authority.pem (the public certificate), hub.key and
hub.pem. Not authority.key, not hub.db: a relay holds no key that can sign a
credential, a member update or a revocation. Move RELAYDIR to the relay's
machine; run ` + "`agent authority --project DIR`" + ` where DIR stays.`,
		Example: "  agentctl project export-relay --dir ./project --out ./relay",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || out == "" {
				return cli.Usagef("--dir and --out are required, e.g. agentctl project export-relay --dir ./project --out ./relay")
			}
			if err := authority.ExportRelay(dir, out); err != nil {
				return err
			}
			fmt.Fprintf(e.out, "relay files of the project in %s written to %s (no authority key)\n", dir, out)
			return nil
		},
	}
	export.Flags().StringVar(&dir, "dir", "", "the project directory (required)")
	export.Flags().StringVar(&out, "out", "", "the new directory to write (required)")
	cmd.AddCommand(initCmd, export)
	return cmd
}

func ticketCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "ticket", Short: "Issue enrollment tickets",
		Example: "  agentctl ticket create --project ./project --attribute postgres-inlet > analysis.ticket"}
	var (
		dir    string
		attrs  []string
		relays []string
		hubs   []string
		expiry time.Duration
		usage  int
		format string
	)
	create := &cobra.Command{
		Use:   "create --project DIR [--attribute K=V]... [--relay NAME]... [--hub HOST:PORT]... [--expires-in 10m] [--usage-count 1]",
		Short: "Issue an enrollment ticket and print it alone on standard output",
		Long: `Issue an enrollment ticket signed by the project's authority. The ticket names the
hub and the authority's key, so an agent needs nothing else to enroll. Its holder
gets the attributes given with --attribute in its credentials, and may claim the
relay names given with --relay. The hub refuses it after --expires-in, or after
--usage-count redemptions. An attribute without =V is set to "true".

With several hubs (docs/hub-cluster.md), list every one with --hub, the first the
one agents enroll with: agents fail over between them. Without --hub the ticket
names the project's hub address (project init --hub-address).`,
		Example: `  agentctl ticket create --project ./project --attribute postgres-outlet=true --relay postgres > bank.ticket
  agentctl ticket create --project ./project --attribute postgres-inlet --usage-count 20 --expires-in 24h > fleet.ticket
  agentctl ticket create --project ./project --relay postgres --hub hub1:4443 --hub hub2:4443 --hub hub3:4443 > bank.ticket`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return cli.Usagef("--project is required: the directory made by `agentctl project init`")
			}
			if usage < 1 {
				return cli.Usagef("--usage-count %d: a ticket must be usable at least once", usage)
			}
			if expiry <= 0 {
				return cli.Usagef("--expires-in %v: must be positive, e.g. 10m", expiry)
			}
			p, err := authority.Load(dir)
			if err != nil {
				return err
			}
			s, tk, err := p.NewTicket(authority.TicketOptions{Attributes: parseAttributes(attrs), Relays: relays, ExpiresIn: expiry, Usage: usage, Hubs: hubs})
			if err != nil {
				return err
			}
			return e.emit(format, ticketInfo{Ticket: s, Contents: tk}, func(w io.Writer) { fmt.Fprintln(w, s) })
		},
	}
	outputFlag(create, &format)
	create.Flags().StringVar(&dir, "project", "", "project directory (required)")
	create.Flags().StringArrayVar(&attrs, "attribute", nil, "attribute K=V for the holder's credentials (repeatable)")
	create.Flags().StringArrayVar(&relays, "relay", nil, "relay name the holder may claim (repeatable)")
	create.Flags().StringArrayVar(&hubs, "hub", nil, "HOST:PORT of a hub agents may use, the first the one they enroll with (repeatable; default: the project's hub address)")
	create.Flags().DurationVar(&expiry, "expires-in", authority.DefaultTicketExpiry, "how long the ticket can be redeemed")
	create.Flags().IntVar(&usage, "usage-count", authority.DefaultTicketUsage, "how many times the ticket can be redeemed")
	cmd.AddCommand(create)
	return cmd
}

// projectInfo is what `project init -o json|yaml` prints.
type projectInfo struct {
	ID         string `json:"id"`
	Dir        string `json:"dir"`
	HubAddress string `json:"hub_address"`
}

// ticketInfo is what `ticket create -o json|yaml` prints: the ticket to
// pass to agent run --ticket, and what it says.
type ticketInfo struct {
	Ticket   string       `json:"ticket"`
	Contents *wire.Ticket `json:"contents"`
}

// keepProject is `project init --exist-ok` on a directory that holds a
// project: it succeeds if the project is for hub, saying so.
func keepProject(e *env, dir, hub string) error {
	p, err := authority.Load(dir)
	if err != nil {
		return err
	}
	if p.HubAddress != hub {
		return fmt.Errorf("init project in %s: it holds project %s for hub address %s, not %s: %w", dir, p.ID, p.HubAddress, hub, authority.ErrProjectExists)
	}
	fmt.Fprintf(e.out, "project %s exists in %s (hub address %s): kept\n", p.ID, dir, p.HubAddress)
	return nil
}
