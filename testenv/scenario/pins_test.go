package scenario_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/daemon"
	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/testenv"
	"github.com/sluicehq/sluice/testenv/scenario"
)

// ephemeralBPFDir is a pin directory under /sys/fs/bpf, which `ip netns
// exec` mounts anew for the process it starts: no bpffs is there, so the
// agent mounts one of its own, which goes with it.
const ephemeralBPFDir = "/sys/fs/bpf/sluice-ephemeral"

// testEphemeralPins: an agent whose pins would die with it (its bpffs is
// its own mount namespace's) refuses to start with --datapath on, saying
// how to give it the host's bpffs; with --datapath auto it runs, logs an
// error, and `datapath status` says "pins: ephemeral". It runs on the bank
// host, where no other agent runs the data path, and follows no bridge.
func testEphemeralPins(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	ns, agent := s.Seed.BankHost, filepath.Join(bin, "agent")
	args := func(mode, ticket string) []string {
		dir := t.TempDir()
		return []string{agent, "run", "--state-dir", filepath.Join(dir, "state"), "--api", filepath.Join(dir, "api.sock"),
			"--ticket", ticket, "--datapath", mode, "--bpf-dir", ephemeralBPFDir, "--bridge", "sluice-none"}
	}
	t.Cleanup(func() {
		if out, err := ns.Run(context.Background(), agent, "cleanup", "--bpf-dir", ephemeralBPFDir); err != nil {
			t.Errorf("agent cleanup: %v\n%s", err, out)
		}
	})
	ticket, err := s.Ticket(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, time.Minute) // an agent that starts would run until then
	defer cancel()
	out, err := ns.Run(rctx, args("on", ticket)...)
	if err == nil || strings.Contains(string(out), "agent ready") || !strings.Contains(string(out), "would not outlive the agent") ||
		!strings.Contains(string(out), "mount -t bpf bpf /sys/fs/bpf") || !strings.Contains(string(out), "-v /sys/fs/bpf:/sys/fs/bpf") {
		t.Errorf("--datapath on with pins that die with the agent: %v\n%s\nwant a refusal that says how to mount the host's bpffs", err, out)
	}

	if ticket, err = s.Ticket(ctx); err != nil {
		t.Fatal(err)
	}
	argv := args("auto", ticket)
	p, err := ns.Start("ephemeral-agent", argv, testenv.ProcOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	if err := p.WaitOutput(ctx, "agent ready"); err != nil {
		t.Fatal(err)
	}
	if log := p.Output(); !strings.Contains(log, "ERROR") || !strings.Contains(log, "pins will not outlive the agent") {
		t.Errorf("--datapath auto with pins that die with the agent does not log an error:\n%s", p.OutputTail(3000))
	}
	sock := argv[5]
	text, err := s.Ctl(ctx, "--agent", sock, "datapath", "status")
	if err != nil || !strings.Contains(text, "pins: ephemeral (") {
		t.Errorf("datapath status = %v\n%s\nwant pins: ephemeral (why)", err, text)
	}
	js, err := s.Ctl(ctx, "--agent", sock, "datapath", "status", "-o", "json")
	var st daemon.DatapathStatus
	if err != nil || json.Unmarshal([]byte(js), &st) != nil || st.Pins == nil || st.Pins.State != loader.PinsEphemeral {
		t.Errorf("datapath status -o json = %v\n%s", err, js)
	}
}
