package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/agent/config"
)

func applyCommand(e *env) *cobra.Command {
	var (
		file   string
		dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE [--dry-run]",
		Short: "Make the agent's relays, inlets, outlets and workloads match a configuration file",
		Long: `Make the running agent match the relays, inlets, outlets and workloads of a
configuration file (docs/config.md; the file 'agent run --config' takes, or
'agentctl get all -o yaml' prints). -f - reads standard input.

The file owns every kind it lists: it creates what is missing, updates what
differs (by deleting and creating it again: the agent has no update), and
deletes what the file does not name, even objects created by hand. A kind the
file does not mention at all is left alone; write "inlets: []" to delete every
inlet. The agent's own settings in the file (hub, ticket_file, state_dir, api,
datapath) are read only by 'agent run' and ignored here.

Deletions run before creations, inlets go first and come back last, so that
no portal is ever open wider than under the old file or the new one. apply
checks the whole file before it changes anything, prints each change
("created inlet pg"), or "no changes"; it stops at the first change the agent
refuses, and running it again finishes the work. --dry-run prints the plan
and changes nothing.`,
		Example: `  agentctl apply -f /etc/sluice/agent.yaml
  agentctl get all -o yaml > agent.yaml; agentctl apply -f agent.yaml --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("-f FILE is required (- for standard input)")
			}
			f, err := readConfig(file, cmd.InOrStdin())
			if err != nil {
				return err
			}
			c := e.client()
			cur, err := config.Read(cmd.Context(), c)
			if err != nil {
				return err
			}
			plan := config.Diff(f, cur)
			if plan.Empty() {
				fmt.Fprintln(e.out, "no changes")
				return nil
			}
			if dryRun {
				for _, s := range plan.Steps {
					fmt.Fprintln(e.out, s.Planned())
				}
				return nil
			}
			return plan.Apply(cmd.Context(), c, func(s config.Step) { fmt.Fprintln(e.out, s.String()) })
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "configuration file to apply; - for standard input (required)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print what would change, change nothing")
	return cmd
}

// readConfig reads and checks a configuration file, or standard input for
// "-"; its errors name the file.
func readConfig(name string, stdin io.Reader) (*config.File, error) {
	var (
		data []byte
		err  error
	)
	if name == "-" {
		data, err = io.ReadAll(io.LimitReader(stdin, 16<<20))
		name = "standard input"
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	f, err := config.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return f, nil
}

func getCommand(e *env) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "get relays|inlets|outlets|workloads|all [-o yaml|json]",
		Short: "Print the agent's objects as a configuration file that apply accepts",
		Long: `Print the agent's relays, inlets, outlets or workloads (or all of them) as a
configuration file (docs/config.md): 'agentctl apply -f' of it changes
nothing. Each kind printed is listed even when empty, so that applying the
file later also deletes what was created since, of that kind only.`,
		Example: `  agentctl get all -o yaml > agent.yaml
  agentctl get inlets | agentctl apply -f - --dry-run`,
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		ValidArgs: config.Kinds,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !slices.Contains([]string{"yaml", "json"}, format) {
				return fmt.Errorf("--output %q: want yaml or json", format)
			}
			cur, err := config.Read(cmd.Context(), e.client())
			if err != nil {
				return err
			}
			f := config.FromCurrent(cur, args[0])
			if format == "json" {
				enc := json.NewEncoder(e.out)
				enc.SetIndent("", "  ")
				return enc.Encode(f)
			}
			out, err := config.Marshal(f)
			if err != nil {
				return err
			}
			_, err = io.WriteString(e.out, strings.TrimLeft(string(out), "\n"))
			return err
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "yaml", "output format: yaml or json")
	return cmd
}
