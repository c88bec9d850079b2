package deploy_test

import (
	"bytes"
	"context"
	"fmt"
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
)

// ticketWait bounds each step of the tickets test; they pass long before.
const ticketWait = 30 * time.Second

// proc is a binary of this test run in a process of its own.
type proc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(filepath.Join(bin, name), args...), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// waitOutput waits until the process says want, failing if it exits first.
func (p *proc) waitOutput(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(ticketWait)
	for !strings.Contains(p.out.String(), want) {
		select {
		case <-p.done:
			t.Fatalf("exited (%v) before saying %q:\n%s", p.err, want, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("did not say %q within %v:\n%s", want, ticketWait, p.out.String())
		}
	}
}

// exit waits for the process to end and returns its output.
func (p *proc) exit(t *testing.T) (string, error) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(ticketWait):
		t.Fatalf("did not exit:\n%s", p.out.String())
	}
	return p.out.String(), p.err
}

// stop ends the process with SIGTERM, as the kubelet does, and waits.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if _, err := p.exit(t); err != nil {
		t.Fatalf("stopped with %v:\n%s", err, p.out.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// node is one Kubernetes node's agent: its hostPath state directory and
// the DaemonSet's fixed command line, the Secret's ticket file included.
type node struct {
	state, socket string
	args          []string
}

func newNode(t *testing.T, dir string, i int, ticketFile string) *node {
	n := &node{state: filepath.Join(dir, fmt.Sprintf("node%d", i)), socket: filepath.Join(dir, fmt.Sprintf("node%d.sock", i))}
	n.args = []string{"run", "--state-dir", n.state, "--api", n.socket, "--datapath", "off", "--ticket", "@" + ticketFile}
	return n
}

func (n *node) start(t *testing.T) *proc {
	t.Helper()
	return startProc(t, "agent", n.args...)
}

func (n *node) id(t *testing.T) string {
	t.Helper()
	st, err := api.NewClient(n.socket).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Node
}

// TestDaemonSetTicket: the DaemonSet's Secret holds one ticket that N
// nodes may redeem (agentctl ticket create --usage-count N). Each node
// enrolls once with it; the N+1th is refused, saying the ticket is used
// up, and stays unenrolled; a node whose pod restarts (same command line,
// same Secret, its hostPath state directory) redeems nothing and is the
// same member. A node joining after the ticket expired is refused,
// saying so, until the operator puts a new ticket in the Secret; the
// enrolled nodes are not disturbed by the expired one.
func TestDaemonSetTicket(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	project := filepath.Join(dir, "project")
	ctl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(filepath.Join(bin, "agentctl"), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("agentctl %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	ctl("project", "init", "--dir", project, "--hub-address", addr)
	hub := startProc(t, "agent", "hub", "--project", project, "--listen", addr)
	hub.waitOutput(t, "hub listening")

	const n = 3
	secret := filepath.Join(dir, "secret-ticket")
	if err := os.WriteFile(secret, []byte(ctl("ticket", "create", "--project", project, "--usage-count", fmt.Sprint(n), "--expires-in", "10m", "--attribute", "cluster=true")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var nodes []*node
	var procs []*proc
	ids := map[string]bool{}
	for i := range n {
		nd := newNode(t, dir, i, secret)
		p := nd.start(t)
		p.waitOutput(t, "agent ready")
		nodes, procs = append(nodes, nd), append(procs, p)
		ids[nd.id(t)] = true
	}
	if len(ids) != n {
		t.Fatalf("%d nodes have %d identities", n, len(ids))
	}

	extra := newNode(t, dir, n, secret)
	out, err := extra.start(t).exit(t)
	if err == nil || !strings.Contains(out, "ticket has already been used up") {
		t.Errorf("node %d with the used-up ticket: %v, want a refusal saying it is used up:\n%s", n+1, err, out)
	}
	if _, err := os.Stat(filepath.Join(extra.state, "enrollment.json")); err == nil {
		t.Errorf("the refused node holds an enrollment")
	}

	// A pod restart: same command line, same state directory.
	first := nodes[0].id(t)
	procs[0].stop(t)
	again := nodes[0].start(t)
	again.waitOutput(t, "agent ready")
	if !strings.Contains(again.out.String(), "redeemed this ticket before: --ticket ignored") {
		t.Errorf("the restarted node does not say it ignored the ticket:\n%s", again.out.String())
	}
	if got := nodes[0].id(t); got != first {
		t.Errorf("the restarted node is %s, was %s", got, first)
	}
	members := ctl("member", "list", "--project", project)
	for id := range ids {
		if !strings.Contains(members, id) {
			t.Errorf("member %s missing:\n%s", id, members)
		}
	}
	if got := strings.Count(members, "cluster=true"); got != n {
		t.Errorf("%d members with the ticket's attribute, want %d:\n%s", got, n, members)
	}

	// The ticket expires before a new node joins: it is refused, saying
	// so; the operator rotates the Secret and it enrolls.
	expiring := filepath.Join(dir, "expiring-ticket")
	if err := os.WriteFile(expiring, []byte(ctl("ticket", "create", "--project", project, "--usage-count", "5", "--expires-in", "1s")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // only ever more expired
	late := newNode(t, dir, n+1, expiring)
	out, err = late.start(t).exit(t)
	if err == nil || !strings.Contains(out, "ticket has expired") {
		t.Errorf("a node joining after the ticket expired: %v, want a refusal saying it expired:\n%s", err, out)
	}
	if err := os.WriteFile(expiring, []byte(ctl("ticket", "create", "--project", project, "--usage-count", "5", "--expires-in", "10m")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := late.start(t)
	p.waitOutput(t, "agent ready")
	if late.id(t) == "" || ids[late.id(t)] {
		t.Errorf("the late node after the rotation has identity %q", late.id(t))
	}
}
