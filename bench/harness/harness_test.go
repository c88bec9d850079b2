package harness

import (
	"os"
	"os/exec"
	"slices"
	"testing"
)

func TestParseTPS(t *testing.T) {
	out := `pgbench (15.14 (Debian 15.14-0+deb12u1))
transaction type: <builtin: select only>
number of clients: 4
latency average = 1.862 ms
initial connection time = 24.310 ms
tps = 2148.339506 (without initial connection time)
`
	got, err := parseTPS(out)
	if err != nil || got != 2148.339506 {
		t.Errorf("parseTPS = %v, %v", got, err)
	}
	if _, err := parseTPS("pgbench: error: connection refused"); err == nil {
		t.Error("no tps line: no error")
	}
}

func TestProcStat(t *testing.T) {
	// Burn some CPU so that this process has a nonzero time.
	x := 0
	for i := range 50_000_000 {
		x += i
	}
	_ = x
	ticks, err := cpuTicks(os.Getpid(), false)
	if err != nil || ticks == 0 {
		t.Errorf("cpuTicks(self) = %d, %v", ticks, err)
	}
	rss, err := rssKiB(os.Getpid())
	if err != nil || rss <= 0 {
		t.Errorf("rssKiB(self) = %v, %v", rss, err)
	}
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if d := descendants(os.Getpid()); !slices.Contains(d, cmd.Process.Pid) {
		t.Errorf("descendants %v lack the child %d", d, cmd.Process.Pid)
	}
	if _, err := cpuTicks(cmd.Process.Pid, true); err != nil {
		t.Error(err)
	}
	if _, err := statTicks(-1); err == nil {
		t.Error("statTicks of no process: no error")
	}
}
