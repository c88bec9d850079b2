// Command agent is the Sluice daemon: `agent run` on every host, `agent hub`
// on the one machine both sides can dial, and `agent authority` where the
// project's signing key lives when it is kept apart from the relay.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/agent/buildinfo"
	"github.com/sluicehq/sluice/cmd/internal/cli"
)

func main() {
	ctx, release := watchSignals()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	release()
	if err != nil {
		fmt.Fprintf(os.Stderr, "agent: %v\n", err)
		os.Exit(exitCode(err))
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return cli.Execute(ctx, rootCommand(stdout, stderr), args)
}

func rootCommand(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "agent",
		Short: "Sluice agent: end-to-end encrypted portals between private networks",
		Long: `Sluice agent: 'agent run' on every host, 'agent hub' on the machine both
sides can dial, 'agent authority' where the project's signing key lives when it
is kept apart from the relay.

` + cli.ExitCodesHelp("77  the hub says this node is no longer a member (revoked): restarting cannot help"),
		Example: `  agent hub --project ./project --listen 0.0.0.0:4443
  agent run --state-dir /var/lib/sluice --ticket @bank.ticket`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(runCommand(), hubCommand(), authorityCommand())
	root.AddCommand(cleanupCommand(), versionCommand())
	return root
}

func versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the agent's version: module version, VCS revision, Go version",
		Example: "  agent version",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "agent: %s\n", buildinfo.String(buildinfo.Get()))
			return nil
		},
	}
}
