// Package scenario plays the seed story in a testenv.Seed topology with the
// real binaries: a hub on the internet, a Bank Corp agent with an outlet to
// PostgreSQL, an Analysis Corp agent with an inlet, and the Node.js app.
// The inlet is explicit (the app dials sluice:15432), transparent (the app
// dials PostgreSQL's virtual service address and the BPF data path steers it
// into the agent), or both. make demo, the end-to-end tests and the
// benchmarks drive it.
package scenario

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluicehq/sluice/testenv"
)

// Addresses of the story.
const (
	HubPort     = "4443"
	InletPort   = "15432"
	PGPassword  = "postgres"
	BankRelay   = "postgres"
	startupWait = 30 * time.Second
)

// The transparent inlet: the service address the app dials (no host owns
// it), the workload that may use it, and the policy that says so.
const (
	ServiceIP        = "10.200.0.10"
	ServicePort      = "5432"
	ServiceAddr      = ServiceIP + ":" + ServicePort
	TransparentInlet = "postgres"           // the transparent inlet's name
	AppWorkload      = "app"                // the app container's workload name
	AppAttribute     = "app=analytics"      // the app workload's attribute
	AllowLocal       = `app == "analytics"` // the inlet's policy on local workloads
)

// PostgresOutlet names the bank agent's outlet to PostgreSQL; the inlets
// name it, so that the bank agent may have other outlets.
const PostgresOutlet = "postgres"

// The explicit inlet: on the analysis bridge's address (the app dials
// sluice:15432), for the app workload only.
const (
	ExplicitInlet = "explicit"
	ExplicitAddr  = testenv.SeedAnalysisGW + ":" + InletPort
)

// Mode says which inlets Start creates, and so how RunApp reaches PostgreSQL.
type Mode string

// Modes of a scenario.
const (
	// Explicit: an inlet listening on the analysis bridge's address
	// (ExplicitAddr) with --allow-local AllowLocal; the app dials
	// sluice:15432. The analysis agent runs with the BPF data path, which
	// tells the agent which container a connection comes from (with
	// Options.OpenExplicit: on 0.0.0.0:15432 for anyone, without the data
	// path).
	Explicit Mode = "explicit"
	// Transparent: the analysis agent runs with the BPF data path, and a
	// transparent inlet serves ServiceAddr to the app workload.
	Transparent Mode = "transparent"
	// Both creates both inlets; RunApp uses the transparent one.
	Both Mode = "both"
)

// ParseMode checks a mode name; "" is Explicit.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case "":
		return Explicit, nil
	case Explicit, Transparent, Both:
		return m, nil
	}
	return "", fmt.Errorf("unknown scenario mode %q: want explicit, transparent or both", s)
}

func (m Mode) explicit() bool    { return m == "" || m == Explicit || m == Both }
func (m Mode) transparent() bool { return m == Transparent || m == Both }

// Options configure a scenario. Bin is required.
type Options struct {
	Bin      string       // directory holding the agent and agentctl binaries
	AppDir   string       // directory of the Node.js app with node_modules installed
	Progress func(string) // called with a line for each step; nil is silent
	// CredentialLifetime overrides the hub's credential lifetime (0: default).
	CredentialLifetime time.Duration
	// Mode picks the inlets; "" is Explicit.
	Mode Mode
	// OpenExplicit makes the Explicit mode's inlet listen on 0.0.0.0:15432
	// without --allow-local, on an analysis agent without the BPF data
	// path: the benchmarks' explicit path.
	OpenExplicit bool
	// SplitAuthority runs the hub as a relay only (agent hub --role relay),
	// from a directory with the project's public files and the hub's key
	// but not the authority's key (agentctl project export-relay), and the
	// authority apart (agent authority), linked to it.
	SplitAuthority bool
	// HubArgs are extra `agent hub` arguments, such as --debug-socket PATH.
	HubArgs []string
	// AgentArgs are extra `agent run` arguments for the agent of that name
	// ("bank", "analysis", or one started with StartAgent), such as
	// --direct-listen ADDR.
	AgentArgs map[string][]string
	// Metrics starts the hub and every agent with --metrics on
	// MetricsAddr, the loopback of its own namespace (metrics.go).
	Metrics bool
	// AgentImages start the agents of those names ("analysis") from a
	// container image with podman instead of the agent binary (image.go).
	AgentImages map[string]string
	// HubCluster, 2 or more, runs that many hubs in one etcd cluster, each
	// on a host of its own on the internet side, with tickets that list
	// them all (cluster.go); Hub is the first. RestartHub is not supported.
	HubCluster int
	// NAT, if not nil, puts each company host behind a NAT router of its
	// own (testenv.NewSeedBehindNAT) instead of the seed's firewall alone.
	NAT *testenv.NATOptions
}

// Scenario is the running story.
type Scenario struct {
	Env        *testenv.Env
	Seed       *testenv.Seed
	opts       Options
	ProjectDir string

	Postgres *testenv.Process
	Hub      *testenv.Process
	// Hubs are the cluster's hub processes (Options.HubCluster).
	Hubs []*testenv.Process
	// Authority is the authority's own process with SplitAuthority, and
	// RelayDir the relay's project directory.
	Authority *testenv.Process
	RelayDir  string
	Bank      *Agent
	Analysis  *Agent

	agents  []*Agent // every agent started, for Close
	hubArgs []string // extra arguments of the hub (RestartHub)
}

// Agent is one company's running agent.
type Agent struct {
	Name     string
	NS       *testenv.NS
	StateDir string
	Socket   string
	// BPFDir is where the agent pins its BPF data path, in the env's
	// private bpffs; "" means the agent runs without the data path.
	BPFDir string
	// Bridges are the container bridges whose ports the data path covers.
	Bridges []string
	Proc    *testenv.Process
	s       *Scenario
}

// New builds the topology and starts PostgreSQL; Start plays the rest.
func New(env *testenv.Env, opts Options) (*Scenario, error) {
	for _, b := range []string{"agent", "agentctl"} {
		if _, err := os.Stat(filepath.Join(opts.Bin, b)); err != nil {
			return nil, fmt.Errorf("new scenario: %s not built in %s: %w", b, opts.Bin, err)
		}
	}
	s := &Scenario{Env: env, opts: opts, ProjectDir: filepath.Join(env.Dir(), "project")}
	s.step("building the topology: internet, analysis_corp and bank_corp behind NAT")
	newSeed := testenv.NewSeed
	if opts.NAT != nil {
		s.step("the company hosts are behind NAT routers of their own")
		newSeed = func(e *testenv.Env) (*testenv.Seed, error) { return testenv.NewSeedBehindNAT(e, *opts.NAT) }
	}
	seed, err := newSeed(env)
	if err != nil {
		return nil, err
	}
	s.Seed = seed
	s.step("starting PostgreSQL in bank_corp's postgres container")
	if s.Postgres, err = seed.StartPostgres(PGPassword); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Scenario) step(msg string) {
	if s.opts.Progress != nil {
		s.opts.Progress(msg)
	}
}

// HubAddress is where agents dial the hub.
func (s *Scenario) HubAddress() string { return s.hubAddrs()[0] }

// Ctl runs agentctl with args on the host and returns its standard output.
func (s *Scenario) Ctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.opts.Bin, "agentctl"), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("agentctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// Start creates the project, starts the hub, enrolls both agents and creates
// the relay, the outlet and the inlet.
func (s *Scenario) Start(ctx context.Context) error {
	s.step("administrator: creating the project and the hub (authority + relay) on the internet")
	if _, err := s.Ctl(ctx, "project", "init", "--dir", s.ProjectDir, "--hub-address", s.HubAddress()); err != nil {
		return err
	}
	if s.opts.SplitAuthority {
		s.step("administrator: the relay gets the project's public files and its own key, never the authority's")
		s.RelayDir = filepath.Join(s.Env.Dir(), "relay")
		if _, err := s.Ctl(ctx, "project", "export-relay", "--dir", s.ProjectDir, "--out", s.RelayDir); err != nil {
			return err
		}
	}
	start := s.StartHub
	if s.opts.HubCluster > 1 {
		start = s.startCluster
	}
	if err := start(ctx); err != nil {
		return err
	}
	if s.opts.SplitAuthority {
		if err := s.StartAuthority(ctx); err != nil {
			return err
		}
	}
	s.step("administrator: issuing two one-time enrollment tickets (10 minutes)")
	bankTicket, err := s.Ticket(ctx, "--attribute", "postgres-outlet=true", "--relay", BankRelay)
	if err != nil {
		return err
	}
	analysisTicket, err := s.Ticket(ctx, "--attribute", "postgres-inlet=true")
	if err != nil {
		return err
	}
	s.step("bank_corp: enrolling its agent, claiming relay \"postgres\", outlet to postgres:5432 for postgres-inlet")
	if s.Bank, err = s.StartAgent(ctx, "bank", s.Seed.BankHost, bankTicket); err != nil {
		return err
	}
	if _, err := s.Bank.Ctl(ctx, "relay", "create", BankRelay); err != nil {
		return err
	}
	if _, err := s.Bank.Ctl(ctx, "tcp-outlet", "create", "--name", PostgresOutlet, "--to", "postgres:5432", "--allow", "postgres-inlet"); err != nil {
		return err
	}
	mode := s.opts.Mode
	open := s.opts.OpenExplicit && !mode.transparent()
	if open {
		s.step("analysis_corp: enrolling its agent")
		s.Analysis, err = s.StartAgent(ctx, "analysis", s.Seed.AnalysisHost, analysisTicket)
	} else {
		s.step("analysis_corp: enrolling its agent with the BPF data path on bridge analysis_corp")
		s.Analysis, err = s.StartDatapathAgent(ctx, "analysis", s.Seed.AnalysisHost, analysisTicket, testenv.SeedAnalysisNet)
	}
	if err != nil {
		return err
	}
	if !open {
		s.step("analysis_corp: workload \"app\" (" + s.Seed.App.Addr + ", " + AppAttribute + "), bound to its container's veth")
		if err := s.AllowApp(ctx); err != nil {
			return err
		}
	}
	switch {
	case mode.explicit() && open:
		s.step("analysis_corp: inlet on 0.0.0.0:15432 via relay \"postgres\" for postgres-outlet, open to anyone who reaches it")
		if _, err := s.Analysis.Ctl(ctx, "tcp-inlet", "create", "--from", "0.0.0.0:"+InletPort, "--via", BankRelay, "--outlet", PostgresOutlet, "--allow", "postgres-outlet"); err != nil {
			return err
		}
	case mode.explicit():
		s.step("analysis_corp: inlet on " + ExplicitAddr + " via relay \"postgres\" for postgres-outlet, local workloads " + AllowLocal)
		if _, err := s.Analysis.Ctl(ctx, "tcp-inlet", "create", "--name", ExplicitInlet, "--from", ExplicitAddr, "--via", BankRelay, "--outlet", PostgresOutlet,
			"--allow", "postgres-outlet", "--allow-local", AllowLocal); err != nil {
			return err
		}
	}
	if mode.transparent() {
		s.step("analysis_corp: transparent inlet " + ServiceAddr + " for " + AllowLocal)
		if _, err := s.Analysis.Ctl(ctx, "tcp-inlet", "create", "--transparent", "--name", TransparentInlet, "--from", ServiceAddr, "--outlet", PostgresOutlet,
			"--via", BankRelay, "--allow", "postgres-outlet", "--allow-local", AllowLocal); err != nil {
			return err
		}
	}
	return nil
}

// AllowApp creates the workload of the app container, with the attribute
// that the transparent inlet allows.
func (s *Scenario) AllowApp(ctx context.Context) error {
	_, err := s.Analysis.Ctl(ctx, "workload", "create", AppWorkload, "--address", s.Seed.App.Addr, "--attribute", AppAttribute)
	return err
}

// DisallowApp deletes the app container's workload: the transparent inlet
// refuses it from then on.
func (s *Scenario) DisallowApp(ctx context.Context) error {
	_, err := s.Analysis.Ctl(ctx, "workload", "delete", AppWorkload)
	return err
}

// StartHub starts the hub in the internet namespace and waits until it listens.
func (s *Scenario) StartHub(ctx context.Context) error {
	args := []string{filepath.Join(s.opts.Bin, "agent"), "hub", "--project", s.ProjectDir, "--listen", s.HubAddress()}
	if s.opts.SplitAuthority {
		args = []string{filepath.Join(s.opts.Bin, "agent"), "hub", "--role", "relay", "--project", s.RelayDir, "--listen", s.HubAddress()}
	}
	args = append(append(append(args, s.opts.HubArgs...), s.hubArgs...), s.metricsArgs()...)
	if s.opts.CredentialLifetime > 0 && !s.opts.SplitAuthority {
		args = append(args, "--credential-lifetime", s.opts.CredentialLifetime.String())
	}
	p, err := s.Seed.Internet.Start("hub", args, testenv.ProcOptions{})
	if err != nil {
		return err
	}
	s.Hub = p
	return waitFor(ctx, p, "hub listening")
}

// StartAuthority starts the authority apart from the relay (SplitAuthority),
// on the internet next to it, and waits until it is linked to the relay.
func (s *Scenario) StartAuthority(ctx context.Context) error {
	s.step("administrator: the authority runs apart and dials out to the relay")
	args := []string{filepath.Join(s.opts.Bin, "agent"), "authority", "--project", s.ProjectDir}
	if s.opts.CredentialLifetime > 0 {
		args = append(args, "--credential-lifetime", s.opts.CredentialLifetime.String())
	}
	p, err := s.Seed.Internet.Start("authority", args, testenv.ProcOptions{})
	if err != nil {
		return err
	}
	s.Authority = p
	return waitFor(ctx, p, "linked to the relay")
}

// RestartHub stops the hub and starts it again with extra `agent hub`
// arguments (none: as Start started it). Agents reconnect on their own.
func (s *Scenario) RestartHub(ctx context.Context, args ...string) error {
	if s.opts.HubCluster > 1 {
		return errors.New("restart hub: not supported with a cluster of hubs")
	}
	if s.Hub != nil {
		if err := s.Hub.Stop(); err != nil {
			return fmt.Errorf("stop hub: %w", err)
		}
	}
	s.hubArgs = args
	return s.StartHub(ctx)
}

// Ticket issues a ticket with extra `agentctl ticket create` flags.
func (s *Scenario) Ticket(ctx context.Context, flags ...string) (string, error) {
	if s.opts.HubCluster > 1 {
		for _, h := range s.hubAddrs() {
			flags = append(flags, "--hub", h)
		}
	}
	out, err := s.Ctl(ctx, append([]string{"ticket", "create", "--project", s.ProjectDir}, flags...)...)
	return strings.TrimSpace(out), err
}

// StartAgent starts an agent named name in ns, without the BPF data path,
// enrolling with ticket (which may be empty for an enrolled state
// directory), and waits until it is ready.
func (s *Scenario) StartAgent(ctx context.Context, name string, ns *testenv.NS, ticket string) (*Agent, error) {
	return s.startAgent(ctx, s.newAgent(name, ns), ticket)
}

// StartDatapathAgent is StartAgent with the BPF data path on the ports of
// bridges, pinned in <env bpffs>/<name>. Close runs `agent cleanup` for it.
func (s *Scenario) StartDatapathAgent(ctx context.Context, name string, ns *testenv.NS, ticket string, bridges ...string) (*Agent, error) {
	fs, err := s.Env.BPFFS()
	if err != nil {
		return nil, err
	}
	a := s.newAgent(name, ns)
	a.BPFDir, a.Bridges = filepath.Join(fs, name), bridges
	return s.startAgent(ctx, a, ticket)
}

func (s *Scenario) newAgent(name string, ns *testenv.NS) *Agent {
	a := &Agent{Name: name, NS: ns, s: s,
		StateDir: filepath.Join(s.Env.Dir(), name+"-state"),
		Socket:   filepath.Join(s.Env.Dir(), name+".sock")}
	if s.image(name) != "" { // the container's /run/sluice
		a.Socket = filepath.Join(s.Env.Dir(), name+"-run", "agent.sock")
	}
	return a
}

func (s *Scenario) startAgent(ctx context.Context, a *Agent, ticket string) (*Agent, error) {
	s.agents = append(s.agents, a)
	return a, a.start(ctx, ticket)
}

func (a *Agent) start(ctx context.Context, ticket string) error {
	if a.s.image(a.Name) != "" {
		return a.startContainer(ctx, ticket, append(append([]string(nil), a.s.opts.AgentArgs[a.Name]...), a.s.metricsArgs()...))
	}
	args := []string{filepath.Join(a.s.opts.Bin, "agent"), "run", "--state-dir", a.StateDir, "--api", a.Socket}
	if a.BPFDir == "" {
		args = append(args, "--datapath", "off")
	} else {
		args = append(args, "--datapath", "on", "--bpf-dir", a.BPFDir)
		for _, b := range a.Bridges {
			args = append(args, "--bridge", b)
		}
	}
	args = append(append(args, a.s.opts.AgentArgs[a.Name]...), a.s.metricsArgs()...)
	if ticket != "" {
		tf := filepath.Join(a.s.Env.Dir(), a.Name+".ticket")
		if err := os.WriteFile(tf, []byte(ticket+"\n"), 0o600); err != nil {
			return fmt.Errorf("write ticket: %w", err)
		}
		args = append(args, "--ticket", "@"+tf)
	}
	// The agent sees the cgroup hierarchy, as on a real host, to resolve
	// workloads named by cgroup.
	p, err := a.NS.Start(a.Name+"-agent", args, testenv.ProcOptions{MountCgroup: true})
	if err != nil {
		return err
	}
	a.Proc = p
	return waitFor(ctx, p, "agent ready")
}

// StartAgain starts the agent again on the same state directory, without a
// ticket, after its process ended (a crash, Proc.Kill), and waits until it
// is ready.
func (a *Agent) StartAgain(ctx context.Context) error { return a.start(ctx, "") }

// Kill kills the agent at once (SIGKILL), as a crash would: its process,
// or its container.
func (a *Agent) Kill(ctx context.Context) error {
	if a.ContainerName() != "" {
		return a.killContainer(ctx)
	}
	return a.Proc.Kill()
}

// Stop stops the agent gracefully (SIGTERM) and waits until it exited: its
// process, or its container (podman stop).
func (a *Agent) Stop(ctx context.Context) error {
	if a.ContainerName() != "" {
		return a.stopContainer(ctx)
	}
	return a.Proc.Stop()
}

// Restart stops the agent and starts it again on the same state directory,
// without a ticket.
func (a *Agent) Restart(ctx context.Context) error {
	if err := a.Proc.Stop(); err != nil {
		return fmt.Errorf("stop %s agent: %w", a.Name, err)
	}
	return a.start(ctx, "")
}

// RestartWithTicket stops the agent and starts it again on the same state
// directory with ticket, as a fixed command line (a systemd unit) does with
// the ticket the agent enrolled with.
func (a *Agent) RestartWithTicket(ctx context.Context, ticket string) error {
	if err := a.Proc.Stop(); err != nil {
		return fmt.Errorf("stop %s agent: %w", a.Name, err)
	}
	return a.start(ctx, ticket)
}

// Cleanup stops the agent and, if it ran with the data path, removes its
// programs, links and pins with `agent cleanup --bpf-dir`.
func (a *Agent) Cleanup(ctx context.Context) error {
	var errs []error
	if a.Proc != nil {
		if err := a.Proc.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop %s agent: %w", a.Name, err))
		}
	}
	if a.ContainerName() != "" {
		errs = append(errs, a.removeContainer(ctx))
	}
	if a.BPFDir != "" {
		if _, err := a.NS.Run(ctx, filepath.Join(a.s.opts.Bin, "agent"), "cleanup", "--bpf-dir", a.BPFDir); err != nil {
			errs = append(errs, fmt.Errorf("clean up %s agent's data path: %w", a.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Close stops every agent the scenario started and cleans up the data path
// of those that ran with it. The env's Close does the rest (processes,
// namespaces, the bpffs); call Close before it.
func (s *Scenario) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), startupWait)
	defer cancel()
	var errs []error
	for i := len(s.agents) - 1; i >= 0; i-- {
		errs = append(errs, s.agents[i].Cleanup(ctx))
	}
	return errors.Join(errs...)
}

// Ctl runs agentctl against this agent.
func (a *Agent) Ctl(ctx context.Context, args ...string) (string, error) {
	return a.s.Ctl(ctx, append([]string{"--agent", a.Socket}, args...)...)
}

// waitFor waits until p prints want, or fails with its output.
func waitFor(ctx context.Context, p *testenv.Process, want string) error {
	ctx, cancel := context.WithTimeout(ctx, startupWait)
	defer cancel()
	return p.WaitOutput(ctx, want)
}

// AppTarget is the host and port the app dials: the service address in
// transparent (and both) mode, else the explicit inlet.
func (s *Scenario) AppTarget() (host, port string) {
	if s.opts.Mode.transparent() {
		return ServiceIP, ServicePort
	}
	return "sluice", InletPort
}

// RunApp runs the Node.js app in the app container against AppTarget and
// returns its output. marker is stored in the rows it writes.
func (s *Scenario) RunApp(ctx context.Context, marker string) (string, error) {
	host, port := s.AppTarget()
	return s.RunAppAt(ctx, host, port, marker)
}

// RunAppAt runs the Node.js app against host:port (PGHOST and PGPORT).
func (s *Scenario) RunAppAt(ctx context.Context, host, port, marker string) (string, error) {
	if s.opts.AppDir == "" {
		return "", errors.New("run app: no app directory configured")
	}
	p, err := s.Seed.App.NS.Start("app", []string{"node", filepath.Join(s.opts.AppDir, "app.js")}, testenv.ProcOptions{
		Env:    []string{"PGHOST=" + host, "PGPORT=" + port, "PGPASSWORD=" + PGPassword, "SLUICE_MARKER=" + marker},
		Cgroup: s.Seed.App.Cgroup,
	})
	if err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- p.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		p.Kill()
		<-done
		err = ctx.Err()
	}
	if err != nil {
		return p.Output(), fmt.Errorf("run app: %w\n%s", err, p.OutputTail(2000))
	}
	return p.Output(), nil
}

// Psql runs one SQL command with psql from ns against host:port.
func (s *Scenario) Psql(ctx context.Context, ns *testenv.NS, host, port, sql string) (string, error) {
	out, err := ns.Run(ctx, "env", "PGPASSWORD="+PGPassword, "PGCONNECT_TIMEOUT=5", "psql", "-h", host, "-p", port,
		"-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql)
	return strings.TrimSpace(string(out)), err
}
