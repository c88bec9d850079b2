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
	root := &cobra.Command{
		Use:           "agent",
		Short:         "Sluice agent: end-to-end encrypted portals between private networks",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(runCommand(), hubCommand(), authorityCommand())
	root.AddCommand(cleanupCommand())
	return root.ExecuteContext(ctx)
}
