// Package harness runs the benchmark: it builds the seed topology with
// testenv (through testenv/scenario, which also starts PostgreSQL, the hub
// and the agents), starts the load server in the service container, and
// measures each path from the app container to the service container in one
// run on the same namespaces. It reports progress through a callback and
// returns every sample; it prints nothing itself.
package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/bench/load"
	"github.com/sluicehq/sluice/bench/report"
	"github.com/sluicehq/sluice/testenv"
	"github.com/sluicehq/sluice/testenv/scenario"
)

// Config is how much to measure.
type Config struct {
	Bin        string // agent, agentctl and wireguard-go
	Self       string // this benchmark's binary (load client, server, forwarder)
	Quick      bool
	Repeats    int
	Throughput time.Duration // per bulk sample
	Latency    time.Duration // per request/response sample
	Setup      time.Duration // per setup-time sample, at most SetupMax connections
	SetupMax   int
	// Pgbench is the run-length flags of each pgbench sample (-T SECONDS or
	// -t TRANSACTIONS per client).
	Pgbench   []string
	IdleConns int
	// FileLimit is the RLIMIT_NOFILE every process inherits; a path holds
	// fewer idle connections than IdleConns if they would not fit.
	FileLimit     uint64
	FileLimitNote string // why FileLimit is not higher, if it could not be raised
	// Only limits the run to these path IDs (all if empty).
	Only     []string
	Progress func(string)
	// Dir keeps the env's directory (logs) there instead of a temporary one.
	Dir string
	// Capture runs `agentctl capture --decrypted` against both agents of
	// each Sluice path while it is measured; Metrics starts the hub and the
	// agents with --metrics and scrapes them every second (observe.go).
	Capture, Metrics bool
	// HubCluster, 2 or more, runs the Sluice paths' hub as a cluster of
	// that many hubs in one etcd cluster (scenario.Options.HubCluster):
	// the agents' tickets list them all and they use the first. The
	// sockmap path needs one hub.
	HubCluster int
	// Profile, if set, is where the CPU profiles of each Sluice path's
	// processes during its first pgbench select-only sample go
	// (profile.go); the pgbench samples must then be timed (-T).
	Profile string
}

// Full is the configuration of make bench.
func Full(bin, self string) Config {
	return Config{Bin: bin, Self: self, Repeats: 3, Throughput: 4 * time.Second, Latency: 3 * time.Second,
		Setup: 3 * time.Second, SetupMax: 2000, Pgbench: []string{"-T", "4"}, IdleConns: 10000}
}

// Quick is the configuration of make bench-quick: same paths and metrics,
// very short samples.
func Quick(bin, self string) Config {
	return Config{Bin: bin, Self: self, Quick: true, Repeats: 3, Throughput: 300 * time.Millisecond, Latency: 250 * time.Millisecond,
		Setup: 250 * time.Millisecond, SetupMax: 200, Pgbench: []string{"-t", "40"}, IdleConns: 1000}
}

// Ports of the run. Every one is below the ephemeral range the harness
// sets (20000-65000).
const (
	serverPort  = 5201 // the load server in the service container
	pgPort      = 5432
	directPort  = 7800 // the bank agent's --direct-listen port
	portalLimit = 4000 // idle connections per portal without --max-conns: the agent allows 4096
)

// run is one benchmark run's state.
type run struct {
	cfg    Config
	env    *testenv.Env
	sc     *scenario.Scenario
	seed   *testenv.Seed
	server *testenv.Process
	// direct is "" if the agents support direct channels, else why not.
	direct string
	// directPaths is "" if the agents make direct paths through NATs
	// (agent run --direct-paths), else why not.
	directPaths string
	// agentArgs are the scenario's AgentArgs: the map the agents' start
	// reads, so that a path can change them before it restarts its agents.
	agentArgs map[string][]string
	// maxConns: agent run has --max-conns (else portals allow 4096).
	maxConns bool
	results  *report.Results
}

func (r *run) say(format string, args ...any) {
	if r.cfg.Progress != nil {
		r.cfg.Progress(fmt.Sprintf(format, args...))
	}
}

// Run builds the topology, measures every path and returns the results
// (with the targets computed). Everything it made is removed before it
// returns, also when ctx is canceled.
func Run(ctx context.Context, cfg Config) (res *report.Results, err error) {
	if cfg.Repeats < 1 {
		return nil, errors.New("run benchmark: repeats < 1")
	}
	if cfg.Profile != "" {
		if _, err := ProfileSeconds(cfg.Pgbench); err != nil {
			return nil, fmt.Errorf("run benchmark: %w", err)
		}
	}
	start := time.Now()
	r := &run{cfg: cfg, direct: DirectUnsupported(cfg.Bin), directPaths: DirectPathsUnsupported(cfg.Bin), maxConns: hasFlag(cfg.Bin+"/agent", "--max-conns", "run")}
	r.results = &report.Results{Date: start.UTC().Format("2006-01-02 15:04 UTC"), Machine: machine(), Config: report.Config{
		Quick: cfg.Quick, Repeats: cfg.Repeats, ThroughputSeconds: cfg.Throughput.Seconds(), LatencySeconds: cfg.Latency.Seconds(),
		SetupSeconds: cfg.Setup.Seconds(), SetupMaxConns: cfg.SetupMax, Pgbench: strings.Join(cfg.Pgbench, " "), IdleConns: cfg.IdleConns, FileLimit: cfg.FileLimit, FileLimitNote: cfg.FileLimitNote,
		Observers: cfg.Observers()}}
	env, err := testenv.New(testenv.Options{Dir: cfg.Dir})
	if err != nil {
		return nil, fmt.Errorf("run benchmark: %w", err)
	}
	r.env = env
	defer func() {
		if cerr := env.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("clean up: %w", cerr))
		}
	}()
	if err := r.setup(ctx); err != nil {
		if r.sc != nil {
			err = errors.Join(err, r.sc.Close())
		}
		return nil, fmt.Errorf("run benchmark: %w", err)
	}
	defer func() {
		if cerr := r.sc.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("clean up: %w", cerr))
		}
	}()
	paths := r.paths()
	for i, p := range paths {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("run benchmark: %w", err)
		}
		res := report.NewPath(p.id, p.title, p.where)
		r.results.Paths = append(r.results.Paths, res)
		tag := fmt.Sprintf("[path %d/%d %s]", i+1, len(paths), p.id)
		if err := r.measurePath(ctx, tag, p, res); err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("run benchmark: %w", ctx.Err())
			}
			if !p.mayFail {
				return nil, fmt.Errorf("run benchmark: %s: %w", p.id, err)
			}
			res.Unavailable = err.Error()
			res.Metrics, res.CPU, res.Memory = map[string]*report.Metric{}, nil, nil
			r.say("%s unavailable: %s", tag, res.Unavailable)
		}
	}
	r.results.Targets = report.ComputeTargets(r.results)
	r.results.Duration = time.Since(start).Seconds()
	return r.results, nil
}

// setup starts the scenario (PostgreSQL, hub, agents), the load server and
// pgbench's tables.
func (r *run) setup(ctx context.Context) error {
	opts := scenario.Options{Bin: r.cfg.Bin, Mode: scenario.Explicit, OpenExplicit: true, Progress: func(s string) { r.say("[setup] %s", s) },
		AgentArgs: map[string][]string{}}
	if r.maxConns {
		// Room for every idle connection in one portal.
		for _, a := range []string{"bank", "analysis", transparentAgent} {
			opts.AgentArgs[a] = []string{"--max-conns", fmt.Sprint(max(4096, r.cfg.IdleConns+100))}
		}
	}
	if r.directPaths == "" {
		// The hub paths stay relayed; the direct path through the NATs
		// takes this off its agents (directNATArgs).
		for _, a := range []string{"bank", "analysis", transparentAgent} {
			opts.AgentArgs[a] = append(opts.AgentArgs[a], relayedOnly...)
		}
	}
	r.agentArgs = opts.AgentArgs
	if r.direct == "" {
		opts.AgentArgs["bank"] = append(opts.AgentArgs["bank"], "--direct-listen", fmt.Sprintf("%s:%d", testenv.SeedBankUp, directPort))
	}
	opts.HubArgs = append(r.cfg.observerArgs(opts.AgentArgs), r.profileArgs(opts.AgentArgs)...)
	opts.HubCluster = r.cfg.HubCluster
	sc, err := scenario.New(r.env, opts)
	if err != nil {
		return err
	}
	r.sc, r.seed = sc, sc.Seed
	// Many short connections per sample: a wide ephemeral range, and
	// TIME_WAIT ports reused for new outgoing connections.
	for _, ns := range []*testenv.NS{r.seed.Internet, r.seed.AnalysisHost, r.seed.BankHost, r.seed.App.NS, r.seed.Postgres.NS} {
		if err := ns.SetSysctl("net.ipv4.ip_local_port_range", "20000 65000"); err != nil {
			return err
		}
		if err := ns.SetSysctl("net.ipv4.tcp_tw_reuse", "1"); err != nil {
			return err
		}
	}
	if err := sc.Start(ctx); err != nil {
		return err
	}
	r.say("[setup] load server on %s:%d in the service container", testenv.SeedPostgresAddr, serverPort)
	r.server, err = r.seed.Postgres.NS.Start("server", []string{r.cfg.Self, "serve", "--listen", fmt.Sprintf("0.0.0.0:%d", serverPort)}, testenv.ProcOptions{})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.server.WaitOutput(wctx, "serving"); err != nil {
		return err
	}
	r.say("[setup] pgbench -i -s 1")
	if _, err := r.pg(ctx, r.seed.Postgres.NS, testenv.SeedPostgresAddr, testenv.PostgresPort, "-i", "-s", "1", "-q"); err != nil {
		return err
	}
	return r.sluiceOutlets(ctx)
}

// pg runs pgbench in ns against host:port.
func (r *run) pg(ctx context.Context, ns *testenv.NS, host, port string, args ...string) (string, error) {
	argv := append([]string{"pgbench", "-h", host, "-p", port, "-U", "postgres"}, args...)
	argv = append(argv, "postgres")
	out, err := ns.RunOpts(ctx, argv, testenv.ProcOptions{Env: []string{"PGPASSWORD=" + scenario.PGPassword, "PGCONNECT_TIMEOUT=10"}})
	return string(out), err
}

// pgCPU is pg with pgbench run by a shell that prints its own
// /proc/PID/stat once pgbench has exited: its children's times (cutime,
// cstime) are then pgbench's CPU time, returned in clock ticks.
func (r *run) pgCPU(ctx context.Context, ns *testenv.NS, host, port string, args ...string) (string, uint64, error) {
	script := `pgbench "$@"; rc=$?; echo; echo "pgbench-cpu: $(cat /proc/$$/stat)"; exit $rc`
	argv := append([]string{"sh", "-c", script, "sh", "-h", host, "-p", port, "-U", "postgres"}, args...)
	argv = append(argv, "postgres")
	b, err := ns.RunOpts(ctx, argv, testenv.ProcOptions{Env: []string{"PGPASSWORD=" + scenario.PGPassword, "PGCONNECT_TIMEOUT=10"}})
	out := string(b)
	if err != nil {
		return out, 0, err
	}
	_, stat, ok := strings.Cut(out, "pgbench-cpu: ")
	if !ok {
		return out, 0, fmt.Errorf("pgbench's CPU time: no stat line in %q", tail(out, 500))
	}
	ticks, err := childTicks(strings.TrimSpace(stat))
	return out, ticks, err
}

var (
	tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
	txRE  = regexp.MustCompile(`number of transactions actually processed: ([0-9]+)`)
)

// parseTransactions finds how many transactions pgbench processed.
func parseTransactions(out string) (int, error) {
	m := txRE.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("parse pgbench output: no transaction count in %q", tail(out, 500))
	}
	n, err := strconv.Atoi(m[1])
	if err == nil && n == 0 {
		err = errors.New("no transaction processed")
	}
	if err != nil {
		return 0, fmt.Errorf("parse pgbench output: %w", err)
	}
	return n, nil
}

// parseTPS finds pgbench's rate without the initial connection time.
func parseTPS(out string) (float64, error) {
	m := tpsRE.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("parse pgbench output: no tps line in %q", tail(out, 500))
	}
	return strconv.ParseFloat(m[1], 64)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// client runs the load client in the app container and returns its result.
func (r *run) client(ctx context.Context, stdin io.Reader, args ...string) (*testenv.Process, error) {
	return r.seed.App.NS.Start("client", append([]string{r.cfg.Self, "client"}, args...), testenv.ProcOptions{Stdin: stdin})
}

func (r *run) clientRun(ctx context.Context, args ...string) (load.Result, error) {
	p, err := r.client(ctx, nil, args...)
	if err != nil {
		return load.Result{}, err
	}
	return waitClient(ctx, p)
}

// waitClient waits for the client and decodes its last JSON line.
func waitClient(ctx context.Context, p *testenv.Process) (load.Result, error) {
	select {
	case <-p.Exited():
	case <-ctx.Done():
		p.Kill()
		return load.Result{}, ctx.Err()
	}
	if err := p.Wait(); err != nil {
		return load.Result{}, fmt.Errorf("%w: %s", err, strings.TrimSpace(p.OutputTail(1000)))
	}
	lines := strings.Split(strings.TrimSpace(p.Output()), "\n")
	var out load.Result
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &out); err != nil {
		return load.Result{}, fmt.Errorf("decode client output %q: %w", p.OutputTail(500), err)
	}
	return out, nil
}

// DirectUnsupported says why Sluice's direct path (agent to agent, no hub)
// cannot run with the binaries in bin, or "" if it can.
func DirectUnsupported(bin string) string {
	if !hasFlag(bin+"/agentctl", "--direct", "tcp-inlet", "create") {
		return "agentctl tcp-inlet create has no --direct flag yet"
	}
	if !hasFlag(bin+"/agent", "--direct-listen", "run") {
		return "agent run has no --direct-listen flag yet"
	}
	return ""
}

// DirectPathsUnsupported says why the agents in bin cannot make direct
// paths through NATs (agent run --direct-paths), or "" if they can.
func DirectPathsUnsupported(bin string) string {
	if !hasFlag(bin+"/agent", "--direct-paths", "run") {
		return "agent run has no --direct-paths flag yet"
	}
	return ""
}

// SockmapOverflowed tells whether the sockmap path's unavailable reason is
// the reset bench/README.md documents for it: the hub resets a session
// whose peer has more than its bound waiting, which a bulk sample can reach
// (the kernel gives the redirects no backpressure). Any other reason is a
// failure.
func SockmapOverflowed(reason string) bool {
	return strings.Contains(reason, "throughput: ") && strings.HasSuffix(reason, "connection reset by peer")
}

// hasFlag tells whether `binary ARGS... --help` lists flag.
func hasFlag(binary, flag string, args ...string) bool {
	out, _ := exec.Command(binary, append(args, "--help")...).CombinedOutput()
	return strings.Contains(string(out), flag+" ")
}

// machine describes this machine.
func machine() report.Machine {
	m := report.Machine{NProc: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}
