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
	"github.com/sluicehq/sluice/agent/hub/authority"
)

// writeFile writes a configuration file for the test.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestConfigReloadOnHangup: `agent run --config` starts from the file's
// settings and objects; SIGHUP applies the changed file; a file that is
// wrong at SIGHUP is logged and the running configuration kept; a flag
// overrides the file's setting.
func TestConfigReloadOnHangup(t *testing.T) {
	h := startHub(t)
	dir := t.TempDir()
	ticket, _, err := h.project.NewTicket(authority.TicketOptions{Relays: []string{"postgres"}})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "ticket"), ticket)
	sock := filepath.Join(dir, "agent.sock")
	settings := fmt.Sprintf("hub: %s\nticket_file: %s\nstate_dir: %s\napi: %s\ndatapath: off\n",
		h.project.HubAddress, filepath.Join(dir, "ticket"), filepath.Join(dir, "state"), filepath.Join(dir, "not-this.sock"))
	first := settings + `relays: [postgres]
outlets:
  - name: db
    to: 127.0.0.1:5432
    allow: postgres-inlet
`
	cfg := filepath.Join(dir, "agent.yaml")
	writeFile(t, cfg, first)
	a := startCommand(t, "run", "--config", cfg, "--api", sock) // --api overrides the file's
	a.waitOutput(t, "", "configuration applied")
	c := api.NewClient(sock)
	outs, err := c.Outlets(context.Background())
	if err != nil || len(outs) != 1 || outs[0].To != "127.0.0.1:5432" {
		t.Fatalf("outlets after start: %+v, %v", outs, err)
	}

	writeFile(t, cfg, strings.Replace(first, "127.0.0.1:5432", "127.0.0.1:5433", 1)+`inlets:
  - name: pg
    from: 127.0.0.1:0
    via: postgres
    allow: postgres-outlet
`)
	a.signal(t, syscall.SIGHUP)
	a.waitOutput(t, "", "configuration: created inlet pg")
	outs, err = c.Outlets(context.Background())
	if err != nil || len(outs) != 1 || outs[0].To != "127.0.0.1:5433" {
		t.Errorf("outlets after SIGHUP: %+v, %v", outs, err)
	}
	for _, want := range []string{"configuration: deleted outlet db (update: to differs)", "configuration: created outlet db (update: to differs)"} {
		if !strings.Contains(a.out.String(), want) {
			t.Errorf("the log does not say %q:\n%s", want, a.out.String())
		}
	}

	writeFile(t, cfg, settings+"outlets: []\ninlets:\n  - name: pg\n    form: 127.0.0.1:0\n")
	a.signal(t, syscall.SIGHUP)
	a.waitOutput(t, "", `configuration not reloaded; the running configuration stays`)
	a.alive(t)
	if out := a.out.String(); !strings.Contains(out, `unknown field \"form\"`) || !strings.Contains(out, cfg) {
		t.Errorf("the log does not name the file and the field:\n%s", out)
	}
	outs, _ = c.Outlets(context.Background())
	ins, _ := c.Inlets(context.Background())
	if len(outs) != 1 || len(ins) != 1 {
		t.Errorf("after a wrong file: outlets %+v, inlets %+v; want the running configuration kept", outs, ins)
	}
	a.signal(t, syscall.SIGTERM)
	if code := a.exit(t); code != 0 {
		t.Errorf("exit %d after SIGTERM:\n%s", code, a.out.String())
	}
}

// TestConfigWrongAtStart: a file that is wrong stops the agent before it
// starts, with one line naming the file, the line and the field, exit
// status 2; nothing is created.
func TestConfigWrongAtStart(t *testing.T) {
	dir := t.TempDir()
	p, err := authority.Init(filepath.Join(t.TempDir(), "project"), "127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	ticket, _, err := p.NewTicket(authority.TicketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ticketFile := filepath.Join(t.TempDir(), "ticket")
	writeFile(t, ticketFile, ticket)
	for _, tc := range []struct{ name, file, want string }{
		{"another hub", "state_dir: " + dir + "\nhub: 127.0.0.1:10\nticket_file: " + ticketFile + "\n", "hub: the agent's hub is 127.0.0.1:9, the file says 127.0.0.1:10"},
		{"unknown field", "state_dir: " + dir + "\noutlets:\n  - name: db\n    to: 127.0.0.1:5432\n    alow: x\n", `line 5: unknown field "alow"`},
		{"bad value", "state_dir: " + dir + "\ndatapath: sometimes\n", `line 2: datapath: "sometimes": want auto, on or off`},
		{"missing file", "", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "agent.yaml")
			if tc.file != "" {
				writeFile(t, cfg, tc.file)
			}
			a := startCommand(t, "run", "--config", cfg, "--api", filepath.Join(dir, "agent.sock"))
			if code := a.exit(t); code != 2 { // usage (README, "Signals and exit codes")
				t.Errorf("exit %d, want 2:\n%s", code, a.out.String())
			}
			out := a.out.String()
			if strings.Count(out, "\n") != 1 || !strings.Contains(out, tc.want) || !strings.Contains(out, "--config") {
				t.Errorf("output %q: want one line naming the file and saying %q", out, tc.want)
			}
			if tc.file != "" && !strings.Contains(out, cfg) {
				t.Errorf("output %q does not name %s", out, cfg)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("the agent created %v before it refused the file", entries)
			}
		})
	}
}

// TestConfigHoldsReadiness: the agent is not ready until its file is applied
// in full (its status lists what holds it back, which `agentctl wait --ready`
// and /readyz wait for), so a compose health check or a readiness probe
// never passes before the file's inlets exist; a file that could not be
// applied keeps it unready until a SIGHUP applies it.
func TestConfigHoldsReadiness(t *testing.T) {
	h := startHub(t)
	dir := t.TempDir()
	ticket, _, err := h.project.NewTicket(authority.TicketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "ticket"), ticket)
	busy, err := net.Listen("tcp", "127.0.0.1:0") // the inlet's address, taken
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	sock := filepath.Join(dir, "agent.sock")
	cfg := filepath.Join(dir, "agent.yaml")
	writeFile(t, cfg, fmt.Sprintf(`hub: %s
ticket_file: %s
state_dir: %s
api: %s
datapath: off
inlets:
  - name: pg
    from: %s
    via: postgres
    allow: postgres-outlet
`, h.project.HubAddress, filepath.Join(dir, "ticket"), filepath.Join(dir, "state"), sock, busy.Addr()))
	a := startCommand(t, "run", "--config", cfg)
	a.waitOutput(t, "", "configuration not fully applied")
	st, err := api.NewClient(sock).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Pending) != 1 || !strings.HasPrefix(st.Pending[0], "configuration: "+cfg+" not fully applied") {
		t.Fatalf("status pending %q; want the configuration file named", st.Pending)
	}
	if !st.Hub.Connected {
		t.Fatalf("hub not connected: the test proves nothing about the hold")
	}

	busy.Close()
	a.signal(t, syscall.SIGHUP)
	a.waitOutput(t, "", "configuration applied")
	for deadline := time.Now().Add(wait); ; time.Sleep(20 * time.Millisecond) {
		st, err = api.NewClient(sock).Status(context.Background())
		if err == nil && len(st.Pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after SIGHUP applied the file: pending %q, %v; want none", st.Pending, err)
		}
	}
	if ins, err := api.NewClient(sock).Inlets(context.Background()); err != nil || len(ins) != 1 {
		t.Errorf("inlets once ready: %+v, %v; want pg", ins, err)
	}
	a.signal(t, syscall.SIGTERM)
	if code := a.exit(t); code != 0 {
		t.Errorf("exit %d after SIGTERM:\n%s", code, a.out.String())
	}
}
