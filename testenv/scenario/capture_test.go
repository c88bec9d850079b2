package scenario_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/testenv"
	"github.com/sluicehq/sluice/testenv/scenario"
)

// runningCapture is an `agentctl capture` running in the background.
type runningCapture struct {
	cmd    *exec.Cmd
	path   string
	stderr bytes.Buffer // after the "capturing" line
	done   chan error
}

// startCapture runs agentctl capture against a and waits until the agent
// has subscribed (agentctl says "capturing").
func startCapture(t *testing.T, ctx context.Context, a *scenario.Agent, file string, args ...string) *runningCapture {
	t.Helper()
	c := &runningCapture{path: file, done: make(chan error, 1)}
	args = append([]string{"--agent", a.Socket, "capture", "-w", file}, args...)
	c.cmd = exec.CommandContext(ctx, filepath.Join(bin, "agentctl"), args...)
	pr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.cmd.Process.Kill(); <-c.done })
	br := bufio.NewReader(pr)
	first := make(chan string, 1)
	go func() {
		line, _ := br.ReadString('\n')
		first <- line
		io.Copy(&c.stderr, br)
		c.done <- c.cmd.Wait()
		close(c.done)
	}()
	select {
	case line := <-first:
		if !strings.HasPrefix(line, "capturing ") {
			t.Fatalf("agentctl %s: %q", strings.Join(args, " "), line)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agentctl capture did not start")
	}
	return c
}

// wait waits for the capture to end on its own (--count, --duration).
func (c *runningCapture) wait(t *testing.T) {
	t.Helper()
	select {
	case err := <-c.done:
		if err != nil {
			t.Fatalf("agentctl capture: %v: %s", err, c.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agentctl capture did not end")
	}
}

// interrupt ends the capture as Ctrl-C does.
func (c *runningCapture) interrupt(t *testing.T) {
	t.Helper()
	c.cmd.Process.Signal(syscall.SIGINT)
	c.wait(t)
}

// payloads reads the file back with gopacket: every TCP payload, joined.
func payloads(t *testing.T, path string) []byte {
	t.Helper()
	segs, err := testenv.ReadTCPPayloads(path)
	if err != nil {
		t.Fatalf("read %s back: %v", path, err)
	}
	var all []byte
	for _, s := range segs {
		all = append(all, s.Payload...)
	}
	return all
}

// tcpdumpA is `tcpdump -n -r path -A`, the real tool.
func tcpdumpA(t *testing.T, path string) string {
	t.Helper()
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Fatal("tcpdump is missing (.ci/install-deps installs it)")
	}
	out, err := exec.Command("tcpdump", "-n", "-r", path, "-A").CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump -r %s: %v\n%s", path, err, out)
	}
	return string(out)
}

// testCapture takes decrypted captures on both agents and a wire capture on
// the inlet's while psql queries through the portal: the query is in the
// decrypted captures, between the app's and the service's addresses, and
// not on the wire, which carried the same exchange.
func testCapture(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	dir := t.TempDir()
	inPlain := startCapture(t, ctx, s.Analysis, filepath.Join(dir, "inlet.pcap"), "--decrypted", "--portal", scenario.ExplicitInlet, "--count", "1")
	outPlain := startCapture(t, ctx, s.Bank, filepath.Join(dir, "outlet.pcapng"), "--format", "pcapng", "--portal", scenario.PostgresOutlet, "--count", "1")
	wire := startCapture(t, ctx, s.Analysis, filepath.Join(dir, "wire.pcap"), "--wire")
	mark := marker(t)
	host, port := s.AppTarget()
	got, err := s.Psql(ctx, s.Seed.App.NS, host, port, "SELECT '"+mark+"'")
	if err != nil || got != mark {
		t.Fatalf("psql through the inlet = %q, %v", got, err)
	}
	inPlain.wait(t)  // --count 1: psql's connection ended
	outPlain.wait(t) // the same, on the outlet's side

	query := "SELECT '" + mark + "'"
	plain := 0
	for _, c := range []*runningCapture{inPlain, outPlain} {
		all := payloads(t, c.path)
		if !bytes.Contains(all, []byte(query)) {
			t.Errorf("%s (%d payload bytes read back with gopacket) lacks the query", c.path, len(all))
		}
		plain = len(all)
	}
	// The wire carried the same exchange, sealed: at least as many bytes.
	// Wait for them to reach the file before Ctrl-C, which (as tcpdump's)
	// loses what is still on its way.
	wireBytes := func() int {
		segs, err := testenv.ReadTCPPayloads(wire.path) // a packet may be half-written: not yet
		n := 0
		for _, s := range segs {
			n += len(s.Payload)
		}
		if err != nil {
			return 0
		}
		return n
	}
	deadline := time.Now().Add(30 * time.Second)
	for wireBytes() < plain && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	wire.interrupt(t)
	dump := tcpdumpA(t, inPlain.path)
	flow := fmt.Sprintf("%s.", s.Seed.App.Addr)
	service := fmt.Sprintf(" > %s.%s:", scenario.ExplicitAddr[:strings.LastIndex(scenario.ExplicitAddr, ":")], scenario.InletPort)
	for _, want := range []string{query, flow, service, "Flags [S]", "Flags [F.]"} {
		if !strings.Contains(dump, want) {
			t.Errorf("tcpdump -r -A of the inlet's capture lacks %q:\n%s", want, dump)
		}
	}
	if testing.Verbose() {
		t.Logf("tcpdump -n -r %s -A:\n%s", filepath.Base(inPlain.path), dump)
	}
	if dump := tcpdumpA(t, outPlain.path); !strings.Contains(dump, query) || !strings.Contains(dump, ".5432: Flags") {
		t.Errorf("tcpdump -r -A of the outlet's pcapng capture lacks the query to port 5432:\n%s", dump)
	}

	checkWireshark(t, inPlain.path, outPlain.path, query)

	all := payloads(t, wire.path)
	if len(all) < plain {
		t.Fatalf("the wire capture holds %d payload bytes, fewer than the %d of plaintext: it missed the portal's traffic", len(all), plain)
	}
	if bytes.Contains(all, []byte(mark)) || strings.Contains(tcpdumpA(t, wire.path), mark) {
		t.Error("the marker is in plaintext in the wire capture")
	}
	// The seed's agents keep their ports: the channel goes straight to the
	// bank's agent (docs/direct-paths.md), not to the hub.
	if !strings.Contains(tcpdumpA(t, wire.path), " > "+testenv.SeedBankUp+".") {
		t.Error("the wire capture shows no connection to the bank agent's address: the channel did not go direct")
	}
	for _, c := range []*runningCapture{inPlain, outPlain, wire} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v; want 0600 (a capture holds what the portal protects)", c.path, fi.Mode())
		}
	}
}

// checkWireshark has Wireshark's PostgreSQL dissector (through tshark, when
// it is installed: .ci/install-deps does not install it) find the query: on
// the outlet's side, port 5432, by itself; on the inlet's, port 15432, with
// Decode As, as docs/capture.md says.
func checkWireshark(t *testing.T, inlet, outlet, query string) {
	t.Helper()
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Log("tshark is not installed: the PostgreSQL dissector is not checked")
		return
	}
	for _, c := range []struct {
		path string
		args []string
	}{
		{outlet, nil},
		{inlet, []string{"-d", "tcp.port==" + scenario.InletPort + ",pgsql"}},
	} {
		args := append([]string{"-n", "-r", c.path, "-Y", "pgsql.query", "-T", "fields", "-e", "pgsql.query"}, c.args...)
		out, err := exec.Command(tshark, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), query) {
			t.Errorf("tshark %s: %v; want the query in pgsql.query:\n%s", strings.Join(args, " "), err, out)
		}
	}
}
