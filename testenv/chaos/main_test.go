package chaos_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// bin holds the agent and agentctl binaries the tests run: built for this
// run, or SLUICE_BIN's (for example an older build, to compare).
var bin string

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if os.Getenv(envChaos) == "" && os.Getenv(envSoak) == "" {
		return m.Run() // every test skips: nothing to build
	}
	if bin = os.Getenv("SLUICE_BIN"); bin != "" {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "sluice-chaos-bin")
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
	return m.Run()
}

// What the suites are asked to do.
const (
	envChaos = "SLUICE_CHAOS" // short or long
	envSoak  = "SLUICE_SOAK"  // a duration
)

// chaosConfig is the form of the fault-injection suite.
type chaosConfig struct {
	long   bool
	trials int // truncation trials per process killed and direction
}

// chaosMode reads SLUICE_CHAOS, or skips the test.
func chaosMode(t *testing.T) chaosConfig {
	switch os.Getenv(envChaos) {
	case "short":
		return chaosConfig{trials: 2}
	case "long":
		return chaosConfig{long: true, trials: 20}
	case "":
		t.Skip("the fault-injection suite runs with make chaos (CI runs make chaos CHAOS=short)")
	}
	t.Fatalf("%s=%q: want short or long", envChaos, os.Getenv(envChaos))
	return chaosConfig{}
}

// soakDuration reads SLUICE_SOAK, or skips the test.
func soakDuration(t *testing.T) time.Duration {
	v := os.Getenv(envSoak)
	if v == "" {
		t.Skip("the soak runs with make soak (CI runs make soak SOAK=1m)")
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 30*time.Second {
		t.Fatalf("%s=%q: want a duration of at least 30s", envSoak, v)
	}
	return d
}

// hasFlag tells whether `binary ARGS... --help` lists flag.
func hasFlag(binary, flag string, args ...string) bool {
	out, _ := exec.Command(filepath.Join(bin, binary), append(args, "--help")...).CombinedOutput()
	return strings.Contains(string(out), flag+" ")
}
