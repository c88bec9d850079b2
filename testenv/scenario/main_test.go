package scenario_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// bin holds the agent and agentctl binaries built for this test run.
var bin string

// appDir is the Node.js app, with its dependencies installed by `make app-deps`.
var appDir string

func TestMain(m *testing.M) {
	if code, ok := runHelper(); ok { // the cluster test's agents (cluster_helper_test.go)
		os.Exit(code)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sluice-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin = dir
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/sluicehq/sluice/cmd/agent", "github.com/sluicehq/sluice/cmd/agentctl")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "build binaries: %v\n", err)
		return 1
	}
	appDir, _ = filepath.Abs("app")
	return m.Run()
}
