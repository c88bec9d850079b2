package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/hub/etcdstore"

	"github.com/sluicehq/sluice/cmd/internal/cli"
)

// hubCheckCommand is `agent hub check`: the database check that `agent hub`
// runs in a child process before it opens hub.db, and that an operator runs
// on a backup.
func hubCheckCommand() *cobra.Command {
	var projectDir string
	cmd := &cobra.Command{
		Use:   "check --project DIR [FILE]",
		Short: "Check the hub's database (or a backup in FILE) without serving",
		Long: `Check the project's hub database (hub.db), or a backup of it in FILE: it exists
and is not empty, every page is in the file, bbolt's consistency check passes,
every record (members, used tickets, the generation) decodes, and it belongs to
this project. Prints what it holds; exits non-zero with the reason otherwise.
'agent hub' runs this check before it serves, and 'agent hub --restore' before
it restores.`,
		Example: `  agent hub check --project ./project
  agent hub check --project ./project hub.backup`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if projectDir == "" {
				return cli.Usagef("--project is required, e.g. agent hub check --project ./project")
			}
			p, err := authority.Load(projectDir)
			if err != nil {
				return err
			}
			path, opts := authority.DatabasePath(projectDir), authority.CheckOptions{ProjectID: p.ID, Consistency: true}
			if len(args) == 1 {
				path, opts.Fix = args[0], authority.BackupFix
			}
			sum, err := authority.CheckDatabase(path, opts)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is sound: %d members (%d revoked), %d tickets used, generation %d\n",
				path, sum.Members, sum.Revoked, sum.Tickets, sum.Generation)
			return nil
		},
	}
	cmd.Flags().StringVar(&projectDir, "project", "", "project directory (required)")
	return cmd
}

// checkInChild runs `agent hub check` (this executable) in a child process
// on the project's database, or on file if it is not "". bbolt's
// consistency check runs on a goroutine of its own, where some damaged
// pages crash the process instead of failing: in a child, a crash is an
// answer ("damaged"), and the hub never serves from a file that crashes it.
func checkInChild(ctx context.Context, projectDir, file string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("check hub database: find this executable: %w", err)
	}
	args := []string{"hub", "check", "--project", projectDir}
	path, fix := authority.DatabasePath(projectDir), authority.RestoreFix(projectDir)
	if file != "" {
		args, path, fix = append(args, "--", file), file, authority.BackupFix
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &limitedWriter{w: &stderr, n: 64 << 10}
	return checkResult(path, fix, cmd.Run(), stderr.String())
}

// checkResult turns the end of a `agent hub check` child into an error: its
// own one-line error, or, if it crashed, a DatabaseError saying so.
func checkResult(path, fix string, err error, stderr string) error {
	if err == nil {
		return nil
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return fmt.Errorf("check hub database %s: %w", path, err)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if line, ok := strings.CutPrefix(lines[0], "agent: "); ok && exit.ExitCode() == 1 {
		return errors.New(line)
	}
	why := exit.String() // "exit status 2", "signal: killed"
	for _, l := range lines {
		if strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ") || strings.HasPrefix(l, "unexpected fault") {
			why = strings.TrimSpace(l)
			break
		}
	}
	return &authority.DatabaseError{Path: path, Problem: "is damaged (checking it crashed the check: " + why + ")",
		Fix: fix, Err: authority.ErrDatabaseDamaged}
}

// limitedWriter keeps the first n bytes written to it.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if len(p) > l.n {
		l.w.Write(p[:l.n])
		l.n = 0
		return len(p), nil
	}
	l.n -= len(p)
	return l.w.Write(p)
}

// hubDatabaseOp runs `agent hub --init` or `agent hub --restore FILE`: each
// does its one thing to the project's database and exits.
func hubDatabaseOp(cmd *cobra.Command, projectDir string, create bool, restore string) error {
	p, err := authority.Load(projectDir)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if _, err := os.Stat(filepath.Join(etcdstore.DataDir(projectDir), "member")); create && err == nil {
		return &authority.DatabaseError{Path: etcdstore.DataDir(projectDir), Problem: "holds the project's records already (hub.db was migrated into it)",
			Fix: fmt.Sprintf("start the hub without --init; to start from a backup instead, use `agent hub --restore FILE --project %s`", projectDir),
			Err: authority.ErrDatabaseExists}
	}
	if create {
		if err := authority.CreateDatabase(p); err != nil {
			return err
		}
		fmt.Fprintf(out, "created an empty hub database %s; start the hub without --init\n", authority.DatabasePath(projectDir))
		return nil
	}
	// A hub on etcd holds its member's data directory: none runs meanwhile.
	unlock, err := etcdstore.LockDir(etcdstore.DataDir(projectDir))
	if err != nil {
		return err
	}
	defer unlock()
	kept, err := authority.Restore(p, restore, func(file string) error { return checkInChild(cmd.Context(), projectDir, file) })
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("restored the hub database %s from %s", authority.DatabasePath(projectDir), restore)
	if kept != "" {
		msg += "; the one it replaced is kept as " + kept
	}
	keptEtcd, err := asideEtcd(projectDir)
	if err != nil {
		return err
	}
	if keptEtcd != "" {
		msg += "; the etcd data it replaces is kept as " + keptEtcd + " (the hub migrates the restored file into etcd at its next start)"
	}
	fmt.Fprintln(out, msg)
	return nil
}
