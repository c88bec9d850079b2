package main

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/agent/buildinfo"
	"github.com/sluicehq/sluice/cmd/internal/cli"
)

// TestHelpLint: every command has an Example, and no flag's usage has a
// backquoted text pflag would show as its value name ('agent hub --help'
// showed "--admin agentctl member") or says a default pflag prints too.
func TestHelpLint(t *testing.T) {
	for _, p := range cli.Lint(rootCommand(io.Discard, io.Discard)) {
		t.Error(p)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"hub", "--help"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "--admin string") || strings.Contains(out.String(), "--admin agentctl") {
		t.Errorf("agent hub --help names --admin's value after a backquoted text:\n%s", out.String())
	}
}

// TestExitCodes: the process exits 2 for a usage error (and did nothing),
// 1 for a failure; the root's --help lists the codes, with 77.
func TestExitCodes(t *testing.T) {
	tests := []struct {
		args []string
		code int
	}{
		{[]string{"version"}, 0},
		{[]string{"run", "--bogus"}, cli.ExitUsage},
		{[]string{"run"}, cli.ExitUsage},
		{[]string{"run", "--state-dir", t.TempDir(), "--datapath", "maybe"}, cli.ExitUsage},
		{[]string{"run", "--state-dir", t.TempDir(), "--routed", "cali["}, cli.ExitUsage},
		{[]string{"run", "extra", "--state-dir", t.TempDir()}, cli.ExitUsage},
		{[]string{"frobnicate"}, cli.ExitUsage},
		{[]string{"hub", "frobnicate", "--project", "x"}, cli.ExitUsage},
		{[]string{"hub", "--project", t.TempDir(), "--listen", "127.0.0.1:0", "--relay", "fast"}, cli.ExitUsage},
		{[]string{"run", "--state-dir", t.TempDir(), "--api", filepath.Join(t.TempDir(), "a.sock"), "--datapath", "off"}, cli.ExitFailure},
		{[]string{"hub", "--project", t.TempDir(), "--listen", "127.0.0.1:0"}, cli.ExitFailure},
	}
	for _, tt := range tests {
		c := startCommand(t, tt.args...)
		<-c.done
		code := 0
		if ee, ok := c.err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if c.err != nil {
			t.Fatal(c.err)
		}
		if code != tt.code {
			t.Errorf("agent %s: exit %d, want %d:\n%s", strings.Join(tt.args, " "), code, tt.code, c.out.String())
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Exit status:", "2   usage error", "77  the hub says"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("agent --help lacks %q:\n%s", want, out.String())
		}
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if want := "agent: " + buildinfo.String(buildinfo.Get()) + "\n"; out.String() != want || !strings.Contains(want, "go1.") {
		t.Errorf("agent version = %q, want %q", out.String(), want)
	}
}
