package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/loader"
)

func cleanupCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "cleanup [--bpf-dir DIR]",
		Short: "Remove the BPF data path an agent left pinned (run it with no agent running)",
		Long: `Remove what the agent's BPF data path left in the kernel: the links pinned
under --bpf-dir (which detaches the programs from the bridges and veths), our
clsact filters, the policy route, and the pins. Other programs on the same
devices are left alone. Until then, connections to transparent inlets are
refused in the kernel. It fails while an agent still holds --bpf-dir.`,
		Example: `  agent cleanup
  agent cleanup --bpf-dir /sys/fs/bpf/sluice-test`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			did, err := cleanup(dir)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), did)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "bpf-dir", loader.DefaultPinDir, "where the data path's maps and links are pinned")
	return cmd
}
