package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/api"
)

// notifyListener is the service manager's end of $NOTIFY_SOCKET.
type notifyListener struct {
	c    *net.UnixConn
	name string
}

func listenNotify(t *testing.T, name string) *notifyListener {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &notifyListener{c: c, name: name}
}

// next returns the next datagram, failing after wait.
func (n *notifyListener) next(t *testing.T) string {
	t.Helper()
	n.c.SetReadDeadline(time.Now().Add(wait))
	b := make([]byte, 4096)
	k, err := n.c.Read(b)
	if err != nil {
		t.Fatalf("no notification on %s: %v", n.name, err)
	}
	return string(b[:k])
}

// TestNotifyReady: under systemd's Type=notify (deploy/systemd) the hub
// says READY=1 once it listens, and the agent once it is enrolled and its
// configuration file is applied (the outlet the file lists exists when
// READY=1 arrives); both say STOPPING=1 at SIGTERM. The agent talks to an
// abstract socket ("@name") too.
func TestNotifyReady(t *testing.T) {
	hubNotify := listenNotify(t, filepath.Join(t.TempDir(), "notify"))
	t.Setenv(notifySocket, hubNotify.name)
	h := startHub(t)
	if got := hubNotify.next(t); got != "READY=1" {
		t.Errorf("the hub's first notification is %q, want READY=1", got)
	}

	agentNotify := listenNotify(t, fmt.Sprintf("@sluice-notify-test-%d", os.Getpid()))
	t.Setenv(notifySocket, agentNotify.name)
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte("outlets:\n  - name: db\n    to: 127.0.0.1:5432\n    allow: db-inlet\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startCommand(t, "run", "--config", cfg, "--state-dir", filepath.Join(dir, "state"), "--api", sock, "--datapath", "off", "--ticket", h.ticket(t))
	got := agentNotify.next(t)
	if !strings.HasPrefix(got, "READY=1\n") {
		t.Fatalf("the agent's first notification is %q, want READY=1 first:\n%s", got, a.out.String())
	}
	outlets, err := api.NewClient(sock).Outlets(context.Background())
	if err != nil || len(outlets) != 1 || outlets[0].Name != "db" {
		t.Errorf("at READY=1 the agent's outlets are %+v (%v), want the file's outlet db", outlets, err)
	}
	a.signal(t, syscall.SIGTERM)
	if got := agentNotify.next(t); got != "STOPPING=1" {
		t.Errorf("the agent's notification at SIGTERM is %q, want STOPPING=1", got)
	}
	h.signal(t, syscall.SIGTERM)
	if got := hubNotify.next(t); got != "STOPPING=1" {
		t.Errorf("the hub's notification at SIGTERM is %q, want STOPPING=1", got)
	}
	for name, c := range map[string]*command{"agent": a, "hub": h.command} {
		if code := c.exit(t); code != 0 {
			t.Errorf("the %s exited with %d, want 0:\n%s", name, code, c.out.String())
		}
	}
}
