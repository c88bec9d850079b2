package main

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/agent/wire"
)

func agentctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	return out.String(), err
}

func TestProjectAndTicket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "project")
	out, err := agentctl(t, "project", "init", "--dir", dir, "--hub-address", "198.18.0.1:4443")
	if err != nil || !strings.Contains(out, "created") {
		t.Fatalf("project init = %q, %v", out, err)
	}
	out, err = agentctl(t, "ticket", "create", "--project", dir, "--attribute", "postgres-outlet=true",
		"--attribute", "flag", "--relay", "postgres", "--usage-count", "2", "--expires-in", "1h")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, "\n") != 1 {
		t.Errorf("ticket create printed more than the ticket: %q", out)
	}
	tk, err := wire.ParseTicket(out)
	if err != nil {
		t.Fatal(err)
	}
	if tk.Attributes["postgres-outlet"] != "true" || tk.Attributes["flag"] != "true" || tk.Usage != 2 || tk.Relays[0] != "postgres" || tk.Hub != "198.18.0.1:4443" {
		t.Errorf("ticket %+v", tk)
	}
}

// TestTicketHubs: --hub lists every hub, the first the ticket's hub, each
// once; one --hub replaces the project's address; a bad address is refused.
func TestTicketHubs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "project")
	if _, err := agentctl(t, "project", "init", "--dir", dir, "--hub-address", "198.18.0.1:4443"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		hubs     []string
		hub      string
		addrs    []string
		refusing string
	}{
		{nil, "198.18.0.1:4443", []string{"198.18.0.1:4443"}, ""},
		{[]string{"hub2:4443"}, "hub2:4443", []string{"hub2:4443"}, ""},
		{[]string{"h1:4443", "h2:4443", "h1:4443", "h3:4443"}, "h1:4443", []string{"h1:4443", "h2:4443", "h3:4443"}, ""},
		{[]string{"h1:4443", "no-port"}, "", nil, "want HOST:PORT"},
	} {
		args := []string{"ticket", "create", "--project", dir}
		for _, h := range c.hubs {
			args = append(args, "--hub", h)
		}
		out, err := agentctl(t, args...)
		if c.refusing != "" {
			if err == nil || !strings.Contains(err.Error(), c.refusing) {
				t.Errorf("ticket create --hub %v = %v, want a refusal saying %q", c.hubs, err, c.refusing)
			}
			continue
		}
		if err != nil {
			t.Fatalf("ticket create --hub %v: %v", c.hubs, err)
		}
		tk, err := wire.ParseTicket(out)
		if err != nil {
			t.Fatal(err)
		}
		if tk.Hub != c.hub || !slices.Equal(tk.Addresses(), c.addrs) || (len(c.addrs) == 1) != (len(tk.Hubs) == 0) {
			t.Errorf("ticket create --hub %v: hub %q, hubs %q, want %q and %q", c.hubs, tk.Hub, tk.Hubs, c.hub, c.addrs)
		}
	}
}

func TestBadInputIsExplained(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "project")
	if _, err := agentctl(t, "project", "init", "--dir", dir, "--hub-address", "127.0.0.1:4443"); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "none.sock")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"project", "init", "--dir", dir, "--hub-address", "127.0.0.1:4443"}, "already holds a project"},
		{[]string{"project", "init", "--dir", t.TempDir()}, "--hub-address are required"},
		{[]string{"project", "init", "--dir", t.TempDir(), "--hub-address", "nohost"}, "want HOST:PORT"},
		{[]string{"ticket", "create"}, "--project is required"},
		{[]string{"ticket", "create", "--project", t.TempDir()}, "agentctl project init"},
		{[]string{"ticket", "create", "--project", dir, "--relay", "Bad Name"}, "relay name"},
		{[]string{"ticket", "create", "--project", dir, "--usage-count", "0"}, "usable at least once"},
		{[]string{"ticket", "create", "--project", dir, "--expires-in", "-5m"}, "must be positive"},
		{[]string{"ticket", "create", "--project", dir, "--expires-in", "tomorrow"}, "invalid argument"},
		{[]string{"--agent", sock, "status"}, "no agent is running there"},
		{[]string{"--agent", sock, "tcp-inlet", "list"}, "start one with `agent run`"},
		{[]string{"relay", "create"}, "accepts 1 arg"},
		{[]string{"frobnicate"}, "unknown command"},
	}
	for _, tt := range tests {
		_, err := agentctl(t, tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("agentctl %s: error %v, want it to mention %q", strings.Join(tt.args, " "), err, tt.want)
		}
	}
}
