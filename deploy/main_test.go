package deploy_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// bin holds the agent and agentctl binaries built for this test run.
var bin string

// appDir is the Node.js app of the seed scenario (make app-deps).
var appDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sluice-deploy-bin")
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
	appDir, _ = filepath.Abs("../testenv/scenario/app")
	return m.Run()
}
