package harness

import (
	"os"
	"os/exec"
	"slices"
	"strings"
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

func TestParseTransactions(t *testing.T) {
	for out, want := range map[string]int{
		"number of transactions per client: 40\nnumber of transactions actually processed: 160/160\n": 160,
		"duration: 4 s\nnumber of transactions actually processed: 21234\n":                           21234,
	} {
		if got, err := parseTransactions(out); err != nil || got != want {
			t.Errorf("parseTransactions(%q) = %d, %v; want %d", out, got, err, want)
		}
	}
	for _, out := range []string{"pgbench: error: connection refused", "number of transactions actually processed: 0/160"} {
		if n, err := parseTransactions(out); err == nil {
			t.Errorf("parseTransactions(%q) = %d, want an error (a CPU time per transaction needs transactions)", out, n)
		}
	}
}

// TestChildTicks runs the shell wrapper pgCPU uses around a child that
// burns CPU: the stat line it prints carries the child's time.
func TestChildTicks(t *testing.T) {
	script := `sh -c 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done'; echo "pgbench-cpu: $(cat /proc/$$/stat)"`
	out, err := exec.Command("sh", "-c", script).Output()
	if err != nil {
		t.Skip(err)
	}
	_, stat, ok := strings.Cut(string(out), "pgbench-cpu: ")
	if !ok {
		t.Fatalf("no stat line in %q", out)
	}
	ticks, err := childTicks(strings.TrimSpace(stat))
	if err != nil || ticks == 0 {
		t.Errorf("childTicks = %d, %v; want the child's CPU time", ticks, err)
	}
	// A command name with spaces and parentheses does not shift the fields.
	// Fields 16 and 17 (cutime, cstime) are the 13th and 14th after the state.
	if got, err := childTicks("42 (a) b) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15"); err != nil || got != 13+14 {
		t.Errorf("childTicks of a tricky name = %d, %v; want 27", got, err)
	}
	if _, err := childTicks("42 (short) S 1 2"); err == nil {
		t.Error("short stat line: no error")
	}
}

func TestProfileSeconds(t *testing.T) {
	if n, err := ProfileSeconds([]string{"-T", "5"}); err != nil || n != 5 {
		t.Errorf("ProfileSeconds(-T 5) = %d, %v", n, err)
	}
	for _, args := range [][]string{{"-t", "40"}, {"-T"}, {"-T", "x"}, {"-T", "0"}} {
		if _, err := ProfileSeconds(args); err == nil {
			t.Errorf("ProfileSeconds(%q): no error", args)
		}
	}
}

// TestRelayedOnly: the direct path through NAT takes --direct-paths off
// from its agents and gives it back, without touching other arguments.
func TestRelayedOnly(t *testing.T) {
	r := &run{agentArgs: map[string][]string{"bank": {"--max-conns", "5000", "--direct-paths", "off", "--direct-listen", "x"}, "analysis": nil}}
	r.setRelayedOnly(false, "bank", "analysis")
	if want := []string{"--max-conns", "5000", "--direct-listen", "x"}; !slices.Equal(r.agentArgs["bank"], want) {
		t.Errorf("off: bank args %q, want %q", r.agentArgs["bank"], want)
	}
	r.setRelayedOnly(true, "bank", "analysis")
	r.setRelayedOnly(true, "bank")
	if want := []string{"--max-conns", "5000", "--direct-listen", "x", "--direct-paths", "off"}; !slices.Equal(r.agentArgs["bank"], want) {
		t.Errorf("on twice: bank args %q, want %q", r.agentArgs["bank"], want)
	}
	if want := relayedOnly; !slices.Equal(r.agentArgs["analysis"], want) {
		t.Errorf("on: analysis args %q, want %q", r.agentArgs["analysis"], want)
	}
}

func TestSockmapOverflowed(t *testing.T) {
	reset := "single-stream throughput: process client: exit status 1: sluice-bench: run throughput: write: write tcp 10.10.0.2:23078->10.10.0.1:7601: write: connection reset by peer"
	if !SockmapOverflowed(reset) {
		t.Errorf("the documented reset in a bulk sample not accepted: %q", reset)
	}
	for _, other := range []string{
		"set up sluice-sockmap: agent hub: unknown flag: --relay",
		"pgbench select-only: exit status 2: connection reset by peer",
		"single-stream throughput: process client: exit status 1: dial tcp 10.10.0.1:7601: connection refused",
	} {
		if SockmapOverflowed(other) {
			t.Errorf("accepted as the documented reset: %q", other)
		}
	}
}
