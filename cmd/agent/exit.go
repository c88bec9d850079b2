package main

import (
	"errors"

	"github.com/sluicehq/sluice/agent/wire"
)

// Exit codes (README, "Signals and exit codes").
const (
	exitFailure = 1
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
	return exitFailure
}
