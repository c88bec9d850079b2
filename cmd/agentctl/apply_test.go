package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestApplyChecksTheFileFirst: a wrong file is refused with its name, the
// line and the field, before agentctl asks the agent anything (there is
// no agent here: asking would fail with "no agent is running there").
func TestApplyChecksTheFileFirst(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	bad := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(bad, []byte("inlets:\n  - name: pg\n    from: 127.0.0.1:1\n    via: postgres\n    alow: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"apply", "-f", bad}, bad + `: invalid configuration: line 5: unknown field "alow"`},
		{[]string{"apply", "-f", bad, "--dry-run"}, `line 5: unknown field "alow"`},
		{[]string{"apply"}, "-f FILE is required"},
		{[]string{"apply", "-f", filepath.Join(t.TempDir(), "missing.yaml")}, "no such file"},
		{[]string{"get", "portals"}, `invalid argument "portals"`},
		{[]string{"get", "all", "-o", "xml"}, `--output "xml": want yaml or json`},
		{[]string{"apply", "-f", filepath.Join("testdata", "..", "apply_test.go")}, "invalid configuration"},
	} {
		_, err := agentctl(t, append([]string{"--agent", sock}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("agentctl %s: error %v, want it to say %q", strings.Join(tc.args, " "), err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "no agent is running") {
			t.Errorf("agentctl %s asked the agent before checking its input", strings.Join(tc.args, " "))
		}
	}
}
