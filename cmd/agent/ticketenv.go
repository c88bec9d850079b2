package main

import (
	"os"
	"strings"

	"github.com/sluicehq/sluice/cmd/internal/cli"
)

// ticketEnvPrefix marks a --ticket read from an environment variable
// (--ticket env:SLUICE_TICKET), the way Docker Compose files and Kubernetes
// Secrets hand a container its ticket: the agent image has no shell to
// expand "$SLUICE_TICKET" on a command line.
const ticketEnvPrefix = "env:"

// ticketFromEnv returns v unchanged unless it is env:NAME; then it returns
// the value of the environment variable NAME, and a usage error if NAME is
// not set or empty (a ticket that silently went missing would start an agent
// that cannot enroll).
func ticketFromEnv(v string) (string, error) {
	name, ok := strings.CutPrefix(v, ticketEnvPrefix)
	if !ok {
		return v, nil
	}
	if name == "" {
		return "", cli.Usagef("--ticket env:NAME: give the environment variable's name, e.g. --ticket env:SLUICE_TICKET")
	}
	s := strings.TrimSpace(os.Getenv(name))
	if s == "" {
		return "", cli.Usagef("--ticket %s%s: the environment variable %s is not set or empty", ticketEnvPrefix, name, name)
	}
	return s, nil
}
