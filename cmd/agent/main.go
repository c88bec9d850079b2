// Command agent is the Sluice daemon: `agent run` on every host, `agent hub`
// on the one machine both sides can dial, and `agent authority` where the
// project's signing key lives when it is kept apart from the relay.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "agent: %v\n", err)
		os.Exit(1)
	}
}

type logFlags struct{ level, format string }

func (l *logFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
	cmd.Flags().StringVar(&l.format, "log-format", "console", "log format: console or json")
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
