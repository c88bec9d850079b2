package main

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/cmd/internal/cli"
)

// TestTicketFromEnv: --ticket env:NAME takes the ticket from NAME; an unset
// or empty variable, or no name, is a usage error naming the variable, never
// an agent that starts without its ticket; other values pass unchanged.
func TestTicketFromEnv(t *testing.T) {
	t.Setenv("SLUICE_TEST_TICKET", "  sometoken\n")
	t.Setenv("SLUICE_TEST_EMPTY", "")
	if got, err := ticketFromEnv("env:SLUICE_TEST_TICKET"); err != nil || got != "sometoken" {
		t.Errorf("env:SLUICE_TEST_TICKET = %q, %v; want sometoken", got, err)
	}
	for _, v := range []string{"", "sometoken", "@file"} {
		if got, err := ticketFromEnv(v); err != nil || got != v {
			t.Errorf("%q = %q, %v; want it unchanged", v, got, err)
		}
	}
	for v, want := range map[string]string{
		"env:SLUICE_TEST_UNSET": "SLUICE_TEST_UNSET is not set or empty",
		"env:SLUICE_TEST_EMPTY": "SLUICE_TEST_EMPTY is not set or empty",
		"env:":                  "give the environment variable's name",
	} {
		_, err := ticketFromEnv(v)
		if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want a usage error saying %q", v, err, want)
		}
	}
}

// TestRunTicketFromEnv: agent run --ticket env:NAME with NAME unset exits 2
// before it creates anything; with NAME set, the agent reads that ticket
// (a malformed one is refused as a ticket, not as a missing variable).
func TestRunTicketFromEnv(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(t.TempDir(), "a.sock")
	c := startCommand(t, "run", "--state-dir", dir, "--api", sock, "--datapath", "off", "--ticket", "env:SLUICE_TEST_UNSET")
	<-c.done
	var ee *exec.ExitError
	if !errors.As(c.err, &ee) || ee.ExitCode() != cli.ExitUsage || !strings.Contains(c.out.String(), "SLUICE_TEST_UNSET is not set") {
		t.Fatalf("unset variable: %v, want exit %d naming it:\n%s", c.err, cli.ExitUsage, c.out.String())
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*")); len(m) != 0 {
		t.Errorf("the refused agent created %v", m)
	}
	t.Setenv("SLUICE_TEST_TICKET", "not-a-ticket")
	c = startCommand(t, "run", "--state-dir", dir, "--api", sock, "--datapath", "off", "--ticket", "env:SLUICE_TEST_TICKET")
	<-c.done
	if c.err == nil || strings.Contains(c.out.String(), "not set") || !strings.Contains(c.out.String(), "ticket") {
		t.Fatalf("malformed ticket from the environment: %v, want a ticket error:\n%s", c.err, c.out.String())
	}
	t.Logf("malformed ticket from the environment: %s", strings.TrimSpace(c.out.String()))
}
