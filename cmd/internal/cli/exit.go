package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes both commands share (each root command's --help and the
// README's "Signals and exit codes" list them).
const (
	ExitFailure = 1 // the command failed
	ExitUsage   = 2 // bad flags or arguments: the command did nothing
	ExitNoAgent = 3 // agentctl: no agent (or hub) answers on the socket
)

// ErrUsage marks an error in how the command was called (a bad flag, a
// missing or extra argument, an unknown command).
var ErrUsage = errors.New("usage error")

type usageError struct{ err error }

func (u usageError) Error() string   { return u.err.Error() }
func (u usageError) Unwrap() []error { return []error{u.err, ErrUsage} }

// Usage marks err as a usage error; its text is err's.
func Usage(err error) error {
	if err == nil || errors.Is(err, ErrUsage) {
		return err
	}
	return usageError{err}
}

// Usagef is Usage(fmt.Errorf(format, a...)).
func Usagef(format string, a ...any) error { return Usage(fmt.Errorf(format, a...)) }

// Execute runs root with args after marking, over the whole command tree,
// the errors of flag parsing and argument checks as usage errors, and
// giving each command that only groups others a run that refuses an
// unknown subcommand (cobra would print the help and succeed).
func Execute(ctx context.Context, root *cobra.Command, args []string) error {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return Usage(err) })
	Walk(root, func(c *cobra.Command) {
		if c.Args != nil {
			check := c.Args
			c.Args = func(cmd *cobra.Command, args []string) error { return Usage(check(cmd, args)) }
		}
		if !c.Runnable() && c.HasSubCommands() && c.HasParent() {
			c.Args = cobra.ArbitraryArgs
			c.RunE = func(cmd *cobra.Command, args []string) error {
				if len(args) > 0 {
					return Usagef("unknown command %q for %q (see '%s --help')", args[0], cmd.CommandPath(), cmd.CommandPath())
				}
				return cmd.Help()
			}
		}
	})
	root.SetArgs(args)
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	// cobra adds its __complete command, for shells, as it executes.
	complete := len(args) > 0 && (args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd)
	if _, _, err := root.Find(args); err != nil && !complete {
		return Usage(err)
	}
	return root.ExecuteContext(ctx)
}

// Walk calls f on c and every command below it.
func Walk(c *cobra.Command, f func(*cobra.Command)) {
	f(c)
	for _, sub := range c.Commands() {
		Walk(sub, f)
	}
}

// ExitCodesHelp is the paragraph of a root command's long help that lists
// the exit codes; extra lines (e.g. "77  ...") follow the common ones.
func ExitCodesHelp(extra ...string) string {
	lines := []string{
		"Exit status:",
		"  0   success",
		"  1   the command failed (the message says why)",
		"  2   usage error: a bad flag or argument; nothing was done",
	}
	for _, e := range extra {
		lines = append(lines, "  "+e)
	}
	return strings.Join(lines, "\n")
}
