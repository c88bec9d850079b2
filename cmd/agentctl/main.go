// Command agentctl manages Sluice: projects and tickets (on the hub's
// machine), and relays, portals and status (through an agent's local API).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/agent/api"
	hubadmin "github.com/sluicehq/sluice/agent/hub/admin"
	"github.com/sluicehq/sluice/cmd/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "agentctl: %v\n", err)
		os.Exit(exitCode(err))
	}
}

// exitCode is the exit status for the error a command returned (the root
// command's long help lists them).
func exitCode(err error) int {
	switch {
	case errors.Is(err, cli.ErrUsage), errors.Is(err, api.ErrRefusedInput):
		return cli.ExitUsage
	case errors.Is(err, api.ErrNoAgent), errors.Is(err, hubadmin.ErrNoHub):
		return cli.ExitNoAgent
	}
	return cli.ExitFailure
}

// env carries what every subcommand needs.
type env struct {
	socket string
	out    io.Writer
}

func (e *env) client() *api.Client { return api.NewClient(e.agentSocket()) }

// agentSocket is --agent, else $SLUICE_AGENT, else api.DefaultSocket.
func (e *env) agentSocket() string {
	if e.socket != "" {
		return e.socket
	}
	if s := os.Getenv("SLUICE_AGENT"); s != "" {
		return s
	}
	return api.DefaultSocket
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return cli.Execute(ctx, rootCommand(&env{out: stdout}, stdout, stderr), args)
}

func rootCommand(e *env, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "agentctl",
		Short: "Manage Sluice projects, tickets, relays and portals",
		Long: `Manage Sluice: projects and tickets (on the hub's machine, in the project
directory), members and hub backups (through the running hub's admin socket),
and relays, portals, workloads and status (through the local agent's API:
--agent PATH, else $SLUICE_AGENT, else ` + api.DefaultSocket + `).

` + cli.ExitCodesHelp("    (for agentctl also: the agent refused the input, e.g. a name or policy)",
			"3   no agent (or hub) is running on the socket"),
		Example: `  agentctl wait --ready --timeout 30s && agentctl status
  SLUICE_AGENT=/run/sluice/second.sock agentctl tcp-inlet list -o yaml`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&e.socket, "agent", "", "unix socket of the agent's API (default: $SLUICE_AGENT, else "+api.DefaultSocket+")")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(projectCommand(e), ticketCommand(e), relayCommand(e),
		outletCommand(e), inletCommand(e), statusCommand(e), memberCommand(e))
	root.AddCommand(workloadCommand(e), datapathCommand(e), hubCommand(e))
	root.AddCommand(applyCommand(e), getCommand(e))
	root.AddCommand(observeCommand(e))
	root.AddCommand(captureCommand(e))
	root.AddCommand(versionCommand(e), waitCommand(e))
	return root
}

// outputFlag adds -o/--output to cmd; a format other than text, json and
// yaml is a usage error, before the command does anything.
func outputFlag(cmd *cobra.Command, v *string) {
	*v = "text"
	cmd.Flags().VarP((*outputFormat)(v), "output", "o", "output format: text, json or yaml (the API's JSON fields, agent/api/apitype)")
	cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"text", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
}

type outputFormat string

func (o *outputFormat) String() string { return string(*o) }
func (o *outputFormat) Type() string   { return "format" }
func (o *outputFormat) Set(v string) error {
	switch v {
	case "text", "json", "yaml":
		*o = outputFormat(v)
		return nil
	}
	return fmt.Errorf("want text, json or yaml")
}

// emit prints v as JSON or YAML (the same field names: YAML is written
// from the JSON), or calls text for the human form.
func (e *env) emit(format string, v any, text func(io.Writer)) error {
	switch format {
	case "json":
		enc := json.NewEncoder(e.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode yaml: %w", err)
		}
		_, err = e.out.Write(b)
		return err
	}
	text(e.out)
	return nil
}
