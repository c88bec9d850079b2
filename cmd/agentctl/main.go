// Command agentctl manages Sluice: projects and tickets (on the hub's
// machine), and relays, portals and status (through an agent's local API).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/agent/api"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "agentctl: %v\n", err)
		os.Exit(1)
	}
}

// env carries what every subcommand needs.
type env struct {
	socket string
	out    io.Writer
}

func (e *env) client() *api.Client { return api.NewClient(e.socket) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	e := &env{out: stdout}
	root := &cobra.Command{
		Use:           "agentctl",
		Short:         "Manage Sluice projects, tickets, relays and portals",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	def := os.Getenv("SLUICE_AGENT")
	if def == "" {
		def = api.DefaultSocket
	}
	root.PersistentFlags().StringVar(&e.socket, "agent", def, "unix socket of the agent's API (default: $SLUICE_AGENT, then "+api.DefaultSocket+")")
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(projectCommand(e), ticketCommand(e), relayCommand(e),
		outletCommand(e), inletCommand(e), statusCommand(e), memberCommand(e))
	root.AddCommand(workloadCommand(e), datapathCommand(e), hubCommand(e))
	root.AddCommand(applyCommand(e), getCommand(e))
	root.AddCommand(observeCommand(e))
	root.AddCommand(captureCommand(e))
	return root.ExecuteContext(ctx)
}

// outputFlag adds -o/--output to cmd.
func outputFlag(cmd *cobra.Command, v *string) {
	cmd.Flags().StringVarP(v, "output", "o", "text", "output format: text or json")
}

// emit prints v as JSON, or calls text for the human form.
func (e *env) emit(format string, v any, text func(io.Writer)) error {
	switch format {
	case "json":
		enc := json.NewEncoder(e.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "text":
		text(e.out)
		return nil
	}
	return fmt.Errorf("--output %q: want text or json", format)
}
