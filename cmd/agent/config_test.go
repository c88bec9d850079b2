package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

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
