package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	hubadmin "github.com/sluicehq/sluice/agent/hub/admin"
	"github.com/sluicehq/sluice/agent/hub/authority"

	"github.com/sluicehq/sluice/cmd/internal/cli"
)

// hubAdmin is the admin API of the hub on socket, or of the one serving
// project (its hub.sock), or of the one on $SLUICE_HUB_ADMIN.
func hubAdmin(socket, project string) (*hubadmin.Client, error) {
	if socket == "" && project == "" {
		socket = os.Getenv("SLUICE_HUB_ADMIN")
	}
	switch {
	case socket != "":
		return hubadmin.New(socket), nil
	case project != "":
		return hubadmin.New(hubadmin.MemberSocket(project)), nil
	}
	return nil, cli.Usagef("--project is required (the hub's or the authority's project directory), or --hub-admin SOCKET")
}

func hubCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "hub",
		Short:   "Back up the running hub's database, or show the cluster of hubs (on the hub's machine, through its admin socket)",
		Example: "  agentctl hub backup --project ./project -o hub.backup\n  agentctl hub status --project ./project",
	}
	var socket, project, out string
	backup := &cobra.Command{
		Use:   "backup (--project DIR | --hub-admin SOCKET) -o FILE",
		Short: "Write a consistent copy of the running hub's database (members, used tickets, revocations) to FILE",
		Long: `Write a consistent copy of the running hub's database (hub.db: members, used
tickets, revocations, the member-state generation) to FILE, taken in one read
transaction while the hub goes on serving. FILE is written whole or not at
all (0600), and checked before it takes the place of an earlier FILE.

Restore it, with the hub stopped, with 'agent hub --restore FILE --project DIR'.`,
		Example: `  agentctl hub backup --project ./project -o /var/backups/hub.db
  agentctl hub backup --hub-admin /run/sluice/hub.sock -o hub.backup`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("-o FILE is required: where to write the backup")
			}
			a, err := hubAdmin(socket, project)
			if err != nil {
				return err
			}
			var projectID string
			if project != "" {
				p, err := authority.Load(project)
				if err != nil {
					return err
				}
				projectID = p.ID
			}
			sum, n, err := writeBackup(cmd, a, out, projectID)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.out, "hub database backed up to %s (%d bytes): %d members (%d revoked), %d tickets used, generation %d\n",
				out, n, sum.Members, sum.Revoked, sum.Tickets, sum.Generation)
			return nil
		},
	}
	backup.Flags().StringVarP(&out, "output", "o", "", "file to write the backup to (required)")
	backup.Flags().StringVar(&project, "project", "", "project directory of the running hub: its admin socket is hub.sock there")
	backup.Flags().StringVar(&socket, "hub-admin", "", "unix socket of the hub's admin API, instead of --project (default: $SLUICE_HUB_ADMIN)")
	cmd.AddCommand(backup, hubStatusCommand(e))
	return cmd
}

// writeBackup receives the hub's backup into a temporary file beside out,
// checks it and renames it to out.
func writeBackup(cmd *cobra.Command, a *hubadmin.Client, out, projectID string) (authority.DatabaseSummary, int64, error) {
	var sum authority.DatabaseSummary
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp*")
	if err != nil {
		return sum, 0, fmt.Errorf("write backup: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // gone after the rename
	n, err := a.Backup(cmd.Context(), f)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if err = errors.Join(err, f.Close()); err != nil {
		return sum, n, fmt.Errorf("write backup: %w", err)
	}
	sum, err = authority.CheckDatabase(tmp, authority.CheckOptions{ProjectID: projectID, Fix: "take the backup again"})
	if err != nil {
		return sum, n, fmt.Errorf("the hub's backup is unusable, %s was left as it was: %w", out, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return sum, n, fmt.Errorf("write backup: %w", err)
	}
	return sum, n, nil
}
