package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/api"
	hubadmin "github.com/sluicehq/sluice/agent/hub/admin"
	"github.com/sluicehq/sluice/agent/hub/authority"
)

// envMain makes the test binary run the agent command's main with its
// arguments instead of the tests (startCommand).
const envMain = "SLUICE_AGENT_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envMain) != "" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// wait bounds every step; the tests pass long before it.
const wait = 10 * time.Second

// command is the agent command running in a process of its own (the test
// binary run again), so that a test can signal it.
type command struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error // the exit status, once done is closed
}

func startCommand(t *testing.T, args ...string) *command {
	t.Helper()
	c := &command{cmd: exec.Command(os.Args[0], args...), out: &lockedBuffer{}, done: make(chan struct{})}
	c.cmd.Env = append(os.Environ(), envMain+"=1")
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.done
	})
	return c
}

// waitOutput waits until the command's output (or the file log, if not
// empty) contains want.
func (c *command) waitOutput(t *testing.T, log, want string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		got := c.out.String()
		if log != "" {
			b, _ := os.ReadFile(log)
			got = string(b)
		}
		if strings.Contains(got, want) {
			return
		}
		select {
		case <-c.done:
			t.Fatalf("the command exited (%v) before it said %q:\n%s\n%s", c.err, want, c.out.String(), got)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the command did not say %q within %v:\n%s", want, wait, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exit waits for the command to exit and returns its exit code.
func (c *command) exit(t *testing.T) int {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(wait):
		t.Fatalf("the command did not exit:\n%s", c.out.String())
	}
	var ee *exec.ExitError
	if errors.As(c.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("the command was killed by %v:\n%s", ws.Signal(), c.out.String())
		}
		return ee.ExitCode()
	}
	if c.err != nil {
		t.Fatal(c.err)
	}
	return 0
}

func (c *command) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// alive fails the test if the command has exited.
func (c *command) alive(t *testing.T) {
	t.Helper()
	time.Sleep(200 * time.Millisecond)
	select {
	case <-c.done:
		t.Fatalf("the command exited (%v):\n%s", c.err, c.out.String())
	default:
	}
}

// hubProcess is a project and its hub, running in a process of its own.
type hubProcess struct {
	*command
	project *authority.Project
	admin   string
	log     string
}

func startHub(t *testing.T, extra ...string) *hubProcess {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	p, err := authority.Init(filepath.Join(dir, "project"), addr)
	if err != nil {
		t.Fatal(err)
	}
	h := &hubProcess{project: p, admin: filepath.Join(dir, "hub.sock"), log: filepath.Join(dir, "hub.log")}
	h.command = startCommand(t, append([]string{"hub", "--project", p.Dir, "--listen", addr, "--admin", h.admin, "--log-file", h.log}, extra...)...)
	h.waitOutput(t, h.log, "hub listening")
	return h
}

func (h *hubProcess) ticket(t *testing.T) string {
	t.Helper()
	s, _, err := h.project.NewTicket(authority.TicketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestHangupNeverStops: SIGHUP makes the hub and the agent say what they
// did (the hub reopens its log file, which logrotate moved away) and go
// on; SIGTERM then stops them, exit status 0, their sockets removed.
func TestHangupNeverStops(t *testing.T) {
	h := startHub(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	a := startCommand(t, "run", "--state-dir", filepath.Join(dir, "state"), "--api", sock, "--datapath", "off", "--ticket", h.ticket(t))
	a.waitOutput(t, "", "agent ready")

	if err := os.Rename(h.log, h.log+".1"); err != nil {
		t.Fatal(err)
	}
	h.signal(t, syscall.SIGHUP)
	h.waitOutput(t, h.log, "SIGHUP: log file reopened")
	h.alive(t)
	if _, err := hubadmin.New(h.admin).Members(context.Background()); err != nil {
		t.Errorf("the hub's admin socket after SIGHUP: %v", err)
	}
	a.signal(t, syscall.SIGHUP)
	a.waitOutput(t, "", "SIGHUP: nothing to do")
	a.alive(t)
	if _, err := api.NewClient(sock).Status(context.Background()); err != nil {
		t.Errorf("the agent's API after SIGHUP: %v", err)
	}

	for name, c := range map[string]*command{"agent": a, "hub": h.command} {
		c.signal(t, syscall.SIGTERM)
		if code := c.exit(t); code != 0 {
			t.Errorf("the %s exited with %d after SIGTERM, want 0:\n%s", name, code, c.out.String())
		}
	}
	for _, s := range []string{sock, h.admin} {
		if _, err := os.Stat(s); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s left behind (%v)", s, err)
		}
	}
}

// TestRevokedAgentExits: an agent whose node is revoked stops, says why,
// and exits with status 77, which tells a supervisor not to restart it.
func TestRevokedAgentExits(t *testing.T) {
	h := startHub(t)
	dir := t.TempDir()
	a := startCommand(t, "run", "--state-dir", filepath.Join(dir, "state"), "--api", filepath.Join(dir, "agent.sock"), "--datapath", "off", "--ticket", h.ticket(t))
	a.waitOutput(t, "", "agent ready")
	admin := hubadmin.New(h.admin)
	members, err := admin.Members(context.Background())
	if err != nil || len(members) != 1 {
		t.Fatalf("members: %v, %v", members, err)
	}
	if _, err := admin.Revoke(context.Background(), members[0].NodeID); err != nil {
		t.Fatal(err)
	}
	if code := a.exit(t); code != exitNotMember {
		t.Errorf("the revoked agent exited with %d, want %d:\n%s", code, exitNotMember, a.out.String())
	}
	if out := a.out.String(); !strings.Contains(out, "no longer a member") {
		t.Errorf("the revoked agent does not say why it stops:\n%s", out)
	}
	// Started again, it is refused at once, with the same status.
	again := startCommand(t, "run", "--state-dir", filepath.Join(dir, "state"), "--api", filepath.Join(dir, "agent.sock"), "--datapath", "off")
	if code := again.exit(t); code != exitNotMember {
		t.Errorf("the revoked agent, started again, exited with %d, want %d:\n%s", code, exitNotMember, again.out.String())
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
