package main

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/agent/hub/authority"
)

// TestCheckResult: a child check that fails says its own one-line error; one
// that crashes (a panic, a fatal error, a signal) makes the database
// damaged, with the first line of the crash.
func TestCheckResult(t *testing.T) {
	run := func(script string) (error, string) {
		cmd := exec.Command("sh", "-c", script)
		var out strings.Builder
		cmd.Stderr = &out
		err := cmd.Run()
		return err, out.String()
	}
	for _, tc := range []struct {
		script, want string
		damaged      bool
	}{
		{"exit 0", "", false},
		{"echo 'agent: hub database /p/hub.db is empty (0 bytes); restore' >&2; exit 1", "hub database /p/hub.db is empty (0 bytes); restore", false},
		{"echo 'panic: invalid freelist page: 3' >&2; echo 'goroutine 7 [running]:' >&2; exit 2",
			"hub database /p/hub.db is damaged (checking it crashed the check: panic: invalid freelist page: 3); FIX", true},
		{"echo 'fatal error: out of memory' >&2; exit 2", "checking it crashed the check: fatal error: out of memory", true},
		{"kill -9 $$", "checking it crashed the check: signal: killed", true},
	} {
		err, stderr := run(tc.script)
		got := checkResult("/p/hub.db", "FIX", err, stderr)
		switch {
		case tc.want == "" && got != nil:
			t.Errorf("%s: %v, want nil", tc.script, got)
		case tc.want != "" && (got == nil || !strings.Contains(got.Error(), tc.want)):
			t.Errorf("%s: %v, want it to say %q", tc.script, got, tc.want)
		case errors.Is(got, authority.ErrDatabaseDamaged) != tc.damaged:
			t.Errorf("%s: %v matches ErrDatabaseDamaged: %v, want %v", tc.script, got, !tc.damaged, tc.damaged)
		}
	}
}
