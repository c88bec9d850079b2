package main

import (
	"errors"

	"github.com/sluicehq/sluice/agent/config"
	"github.com/sluicehq/sluice/agent/wire"
	"github.com/sluicehq/sluice/cmd/internal/cli"
)

// Exit codes (README, "Signals and exit codes"; the root command's help):
// cli.ExitFailure, cli.ExitUsage and
const (
	// exitNotMember: the hub says this node is no longer a member
	// (revoked, or unknown to it); restarting cannot help (sysexits.h's
	// EX_NOPERM; systemd: RestartPreventExitStatus=77).
	exitNotMember = 77
)

// exitCode is the exit code for the error a command returned.
func exitCode(err error) int {
	switch {
	case errors.Is(err, wire.ErrMemberRevoked) || errors.Is(err, wire.ErrNotMember):
		return exitNotMember
	case errors.Is(err, cli.ErrUsage):
		return cli.ExitUsage
	}
	if errors.Is(err, config.ErrInvalid) {
		return cli.ExitUsage
	}
	return cli.ExitFailure
}
