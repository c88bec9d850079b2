package deploy_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/api"
	"github.com/sluicehq/sluice/testenv"
	"github.com/sluicehq/sluice/testenv/scenario"
)

// envCaps replaces the unit's capability set in TestAgentAsUnit: the
// experiment behind docs/deploy.md's table runs it once per capability
// left out, e.g. SLUICE_DEPLOY_CAPS=bpf,perfmon,net_admin,sys_admin.
const envCaps = "SLUICE_DEPLOY_CAPS"

// The paths the agent's unit names, replaced in the test by its own.
const (
	unitAgent  = "/usr/local/bin/agent"
	unitConfig = "/etc/sluice/agent.yaml"
)

// unitAgentProcess is the analysis agent started as sluice-agent.service
// starts it.
type unitAgentProcess struct {
	argv   []string
	env    []string
	socket string
	ns     *testenv.NS
	proc   *testenv.Process
}

// TestAgentAsUnit starts the analysis agent of the seed scenario exactly as
// deploy/systemd/sluice-agent.service does: its ExecStart and directories
// (StateDirectory=, RuntimeDirectory=, the ticket as a credential), root
// with its CapabilityBoundingSet only and no new privileges (setpriv, as
// systemd sets them), the relay's inlet and the app's workload from the
// configuration file, with the BPF data path on. The app reaches
// PostgreSQL through the transparent inlet. Killed (SIGKILL) and started
// again with the same command line, the agent is the same member, its
// portals are back, it does not redeem its ticket again (a one-use ticket
// would be refused), and the app passes again.
//
// Its one deviation from the unit: --bpf-dir puts the pins in the test's
// own bpffs instead of the host's /sys/fs/bpf/sluice.
func TestAgentAsUnit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env := testenv.NewT(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) runs the agent with the unit's capabilities")
	}
	if _, err := os.Stat(filepath.Join(appDir, "node_modules", "pg")); err != nil {
		t.Fatalf("the Node.js app's dependencies are missing: run `make app-deps` (%v)", err)
	}
	u := readUnit(t, "systemd/sluice-agent.service")
	caps := u.capabilities(t)
	if v := os.Getenv(envCaps); v != "" {
		caps = strings.Split(v, ",")
		t.Logf("capabilities from $%s instead of the unit's: %v", envCaps, caps)
	}

	s, err := scenario.New(env, scenario.Options{Bin: bin, AppDir: appDir, Mode: scenario.Transparent, Progress: func(m string) { t.Log(m) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close scenario: %v", err)
		}
	})
	startBank(t, ctx, s)
	ticket, err := s.Ticket(ctx, "--attribute", "postgres-inlet=true", "--usage-count", "1")
	if err != nil {
		t.Fatal(err)
	}

	a := newUnitAgent(t, s, u, caps, setpriv, ticket)
	a.start(t, ctx)
	node := a.node(t, ctx)
	runApp(t, ctx, s)
	t.Logf("node %s passed the transparent scenario started as its unit, capabilities %v", node, caps)

	if err := a.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	a.start(t, ctx)
	if got := a.node(t, ctx); got != node {
		t.Errorf("after a restart the agent is node %s, want %s", got, node)
	}
	if !strings.Contains(a.proc.Output(), "redeemed this ticket before: --ticket ignored") {
		t.Errorf("the restarted agent does not say it ignored its redeemed ticket:\n%s", a.proc.OutputTail(4000))
	}
	members, err := s.Ctl(ctx, "member", "list", "--project", s.ProjectDir, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ms []struct {
		NodeID string `json:"node_id"`
	}
	if err := json.Unmarshal([]byte(members), &ms); err != nil || len(ms) != 2 {
		t.Errorf("members after the restart: %s (%v), want 2 (bank and analysis)", members, err)
	}
	inlets, err := api.NewClient(a.socket).Inlets(ctx)
	if err != nil || len(inlets) != 1 || inlets[0].Name != scenario.TransparentInlet {
		t.Errorf("inlets after the restart: %+v (%v), want the file's transparent inlet", inlets, err)
	}
	runApp(t, ctx, s)
}

// startBank plays the bank's side of the scenario: project, hub, the bank
// agent with its relay and outlet.
func startBank(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	t.Helper()
	if _, err := s.Ctl(ctx, "project", "init", "--dir", s.ProjectDir, "--hub-address", s.HubAddress()); err != nil {
		t.Fatal(err)
	}
	if err := s.StartHub(ctx); err != nil {
		t.Fatal(err)
	}
	ticket, err := s.Ticket(ctx, "--attribute", "postgres-outlet=true", "--relay", scenario.BankRelay)
	if err != nil {
		t.Fatal(err)
	}
	bank, err := s.StartAgent(ctx, "bank", s.Seed.BankHost, ticket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bank.Ctl(ctx, "relay", "create", scenario.BankRelay); err != nil {
		t.Fatal(err)
	}
	if _, err := bank.Ctl(ctx, "tcp-outlet", "create", "--name", scenario.PostgresOutlet, "--to", "postgres:5432", "--allow", "postgres-inlet"); err != nil {
		t.Fatal(err)
	}
}

// newUnitAgent prepares the unit's directories, credential and
// configuration file in the env, and the command line from the unit.
func newUnitAgent(t *testing.T, s *scenario.Scenario, u unit, caps []string, setpriv, ticket string) *unitAgentProcess {
	t.Helper()
	root := filepath.Join(s.Env.Dir(), "unit")
	dirs := map[string]string{
		"STATE_DIRECTORY":       filepath.Join(root, "var/lib/sluice"),
		"RUNTIME_DIRECTORY":     filepath.Join(root, "run/sluice"),
		"CREDENTIALS_DIRECTORY": filepath.Join(root, "run/credentials/sluice-agent.service"),
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// systemd copies LoadCredential='s file into the credentials directory.
	if _, fallback := u.credential(t, "ticket"); ticket == "" {
		ticket = fallback
	}
	if err := os.WriteFile(filepath.Join(dirs["CREDENTIALS_DIRECTORY"], "ticket"), []byte(ticket+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(root, "agent.yaml")
	writeConfig(t, cfg, s)
	argv := u.execStart(t, dirs)
	if argv[0] != unitAgent || argv[1] != "run" {
		t.Fatalf("ExecStart runs %v, want %s run", argv[:2], unitAgent)
	}
	argv[0] = filepath.Join(bin, "agent")
	replaced := false
	for i := range argv {
		if argv[i] == unitConfig && argv[i-1] == "--config" {
			argv[i], replaced = cfg, true
		}
	}
	if !replaced {
		t.Fatalf("ExecStart %v has no --config %s", argv, unitConfig)
	}
	fs, err := s.Env.BPFFS()
	if err != nil {
		t.Fatal(err)
	}
	bpfDir := filepath.Join(fs, "unit")
	argv = append(argv, "--bpf-dir", bpfDir)
	ns := s.Seed.AnalysisHost
	a := &unitAgentProcess{ns: ns}
	t.Cleanup(func() {
		if a.proc != nil {
			if err := a.proc.Stop(); err != nil {
				t.Errorf("stop the agent: %v", err)
			}
		}
		if out, err := ns.Run(context.Background(), filepath.Join(bin, "agent"), "cleanup", "--bpf-dir", bpfDir); err != nil {
			t.Errorf("agent cleanup: %v\n%s", err, out)
		}
	})
	var env []string
	for k, v := range dirs {
		env = append(env, k+"="+v)
	}
	for k, v := range u.environment(t) {
		env = append(env, k+"="+v)
	}
	a.argv, a.env = append(append([]string{setpriv}, setprivArgs(caps)...), argv...), env
	a.socket = filepath.Join(dirs["RUNTIME_DIRECTORY"], "agent.sock")
	return a
}

// writeConfig writes the analysis agent's configuration file: the app's
// workload and the transparent inlet, the data path on.
func writeConfig(t *testing.T, path string, s *scenario.Scenario) {
	t.Helper()
	cfg := fmt.Sprintf(`hub: %s
datapath: on
inlets:
  - name: %s
    transparent: true
    from: %s
    via: %s
    outlet: %s
    allow: postgres-outlet
    allow_local: %s
workloads:
  - name: %s
    address: %s
    attributes:
      app: analytics
`, s.HubAddress(), scenario.TransparentInlet, scenario.ServiceAddr, scenario.BankRelay, scenario.PostgresOutlet,
		quoteYAML(scenario.AllowLocal), scenario.AppWorkload, s.Seed.App.Addr)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func quoteYAML(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// start starts the agent with the unit's command line and waits until it
// is ready and its configuration applied (the transparent inlet exists).
func (a *unitAgentProcess) start(t *testing.T, ctx context.Context) {
	t.Helper()
	p, err := a.ns.Start("analysis-unit", a.argv, testenv.ProcOptions{MountCgroup: true, Env: a.env})
	if err != nil {
		t.Fatal(err)
	}
	a.proc = p
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.WaitOutput(wctx, "agent ready"); err != nil {
		t.Fatalf("the agent started as its unit: %v\n%s", err, p.OutputTail(4000))
	}
	for {
		inlets, err := api.NewClient(a.socket).Inlets(wctx)
		if err == nil && len(inlets) == 1 {
			return
		}
		select {
		case <-wctx.Done():
			t.Fatalf("the configuration file's inlet never appeared (%v, %+v):\n%s", err, inlets, p.OutputTail(4000))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (a *unitAgentProcess) node(t *testing.T, ctx context.Context) string {
	t.Helper()
	st, err := api.NewClient(a.socket).Status(ctx)
	if err != nil || st.Node == "" {
		t.Fatalf("status: %+v, %v", st, err)
	}
	return st.Node
}

// runApp runs the Node.js app through the transparent inlet and checks
// that its rows reached PostgreSQL.
func runApp(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	mark := "unit-" + hex.EncodeToString(b[:])
	out, err := s.RunAppAt(ctx, scenario.ServiceIP, scenario.ServicePort, mark)
	if err != nil {
		t.Fatalf("the app through the transparent inlet: %v", err)
	}
	for _, want := range []string{"inserted 3 rows", mark, "The example run was successful"} {
		if !strings.Contains(out, want) {
			t.Errorf("app output lacks %q:\n%s", want, out)
		}
	}
}
