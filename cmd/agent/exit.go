package main

import (
	"errors"

	"github.com/sluicehq/sluice/agent/config"
	"github.com/sluicehq/sluice/agent/wire"
)

// Exit codes (README, "Signals and exit codes").
const (
	exitFailure = 1
	// exitUsage: the command line or the --config file is wrong.
	exitUsage = 2
	// exitNotMember: the hub says this node is no longer a member
	// (revoked, or unknown to it); restarting cannot help (sysexits.h's
	// EX_NOPERM; systemd: RestartPreventExitStatus=77).
	exitNotMember = 77
)

// exitCode is the exit code for the error a command returned.
func exitCode(err error) int {
	if errors.Is(err, wire.ErrMemberRevoked) || errors.Is(err, wire.ErrNotMember) {
		return exitNotMember
	}
	if errors.Is(err, config.ErrInvalid) {
		return exitUsage
	}
	return exitFailure
}
