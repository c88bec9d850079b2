package harness

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/sluicehq/sluice/bench/peers"
	"github.com/sluicehq/sluice/bench/report"
	"github.com/sluicehq/sluice/testenv"
	"github.com/sluicehq/sluice/testenv/scenario"
)

// path is one way from the app to the service.
type path struct {
	id, title, where string
	// mayFail: if it cannot be set up, report it unavailable with the
	// reason instead of failing the run.
	mayFail bool
	open    func(ctx context.Context) (*opened, error)
}

// opened is a path ready to measure.
type opened struct {
	bench  string // host:port the app dials to reach the load server
	pgHost string // and PostgreSQL
	pgPort string
	procs  []peers.Proc // processes on the path (besides client and server)
	// pgProcs, if set, are the processes that carry PostgreSQL's port,
	// where procs are those of the load server's (socat: one pair each).
	pgProcs  []peers.Proc
	idle     []string          // Sluice: the inlets (host:port) for idle connections
	memProcs []peers.Proc      // Sluice: the processes whose RSS per idle connection is reported
	agents   []*scenario.Agent // Sluice: the inlet's and the outlet's agents (observers)
	hub      bool              // Sluice: the path goes through the hub
	// hubFallback: Sluice's direct path, whose channels beyond the direct
	// attempts a peer makes at once (2) go through the hub: a burst of idle
	// connections is held by the hub's descriptors too.
	hubFallback bool
	close       func() error
}

// Where the tunnels' ports are: path k uses 7k01 for the load server and
// 7k32 for PostgreSQL.
func tunnelForwards(k int) []peers.Forward {
	return []peers.Forward{
		{Port: 7001 + 100*k, Target: fmt.Sprintf("%s:%d", testenv.SeedPostgresAddr, serverPort)},
		{Port: 7032 + 100*k, Target: fmt.Sprintf("%s:%d", testenv.SeedPostgresAddr, pgPort)},
	}
}

func (r *run) paths() []path {
	all := []path{
		{id: report.Raw, title: "raw TCP (no isolation)",
			where: "app -> analysis host (NAT) -> internet bridge -> bank host (route + firewall hole for the ports) -> service: the limit",
			open:  r.openRaw},
		r.tunnelPath(report.Socat, "socat", 2, peers.Socat),
		r.tunnelPath(report.Stunnel, "stunnel (TLS 1.3, mutual)", 3, peers.Stunnel),
		r.tunnelPath(report.SSH, "ssh -L", 4, peers.SSH),
		{id: report.WireGuard, title: "WireGuard (wireguard-go)", mayFail: true,
			where: "app -> analysis host wg interface -> UDP over the internet bridge -> bank host wg interface (firewall hole, UDP) -> service",
			open:  r.openWireGuard},
		{id: report.Hub, title: "Sluice via hub, explicit inlet",
			where: "app -> inlet agent 10.10.0.1 (no BPF) -> hub 198.18.0.1 (splice) -> outlet agent (bank host) -> service",
			open:  r.openHub},
		{id: report.Sockmap, title: "Sluice via hub (sockmap relay), explicit", mayFail: true,
			where: "as the explicit path, with the hub run as agent hub --relay sockmap: bytes cross the hub in the kernel (sk_skb redirect)",
			open:  r.openSockmap},
		{id: report.Transparent, title: "Sluice via hub, transparent",
			where: "app dials the virtual service address -> BPF steers into the inlet agent (analysis host) -> hub -> outlet agent -> service",
			open:  r.openTransparent},
		{id: report.Direct, title: "Sluice agent to agent (no hub)", mayFail: r.direct != "",
			where: "app -> inlet agent 10.10.0.1 -> outlet agent's --direct-listen 198.18.0.3 (firewall hole) -> service",
			open:  r.openDirect},
		{id: report.DirectNAT, title: "Sluice direct through NAT", mayFail: r.directPaths != "",
			where: "app -> inlet agent 10.10.0.1 -> TCP simultaneous open through both hosts' NAT firewalls, no hole (the hub coordinates it and carries no byte) -> outlet agent (bank host) -> service",
			open:  r.openDirectNAT},
	}
	if n := r.cfg.HubCluster; n > 1 {
		for i := range all {
			if all[i].id == report.Hub || all[i].id == report.Sockmap || all[i].id == report.Transparent {
				all[i].where = strings.Replace(all[i].where, "hub 198.18.0.1", "hub a", 1) +
					fmt.Sprintf(" [hub cluster: %d hubs in one etcd cluster, each on its host (%s...); the agents use hub a, the first their tickets list]", n, testenv.SeedHubHostAddr(0))
			}
		}
	}
	if len(r.cfg.Only) == 0 {
		return all
	}
	var out []path
	for _, p := range all {
		for _, id := range r.cfg.Only {
			if p.id == id {
				out = append(out, p)
			}
		}
	}
	return out
}

func (r *run) peerEnv() peers.Env {
	return peers.Env{Seed: r.seed, Self: r.cfg.Self, Dir: r.env.Dir(), Bin: r.cfg.Bin}
}

// tunnelPath is a path through a peer with a client end, the forwarder and
// a server end.
func (r *run) tunnelPath(id, title string, k int, start func(context.Context, peers.Env, []peers.Forward) (*peers.Tunnel, error)) path {
	fw := tunnelForwards(k)
	return path{id: id, title: title,
		where: fmt.Sprintf("app -> %s client end on 10.10.0.1:%d (analysis host) -> forwarder 198.18.0.1 (internet) -> server end 198.18.0.3 (bank host, firewall hole) -> service", id, fw[0].Port),
		open: func(ctx context.Context) (*opened, error) {
			t, err := start(ctx, r.peerEnv(), fw)
			if err != nil {
				return nil, err
			}
			return &opened{bench: fmt.Sprintf("%s:%d", peers.ClientAddr, fw[0].Port), pgHost: peers.ClientAddr, pgPort: fmt.Sprint(fw[1].Port),
				procs: t.Procs, pgProcs: t.All, close: t.Close}, nil
		}}
}

func (r *run) openRaw(ctx context.Context) (*opened, error) {
	hole, err := r.seed.AllowInbound(r.seed.BankHost, "tcp", serverPort, pgPort)
	if err != nil {
		return nil, err
	}
	route, err := r.seed.RouteToBank()
	if err != nil {
		return nil, errors.Join(err, hole.Close())
	}
	return &opened{bench: fmt.Sprintf("%s:%d", testenv.SeedPostgresAddr, serverPort), pgHost: testenv.SeedPostgresAddr, pgPort: testenv.PostgresPort,
		close: func() error { return errors.Join(route.Close(), hole.Close()) }}, nil
}

func (r *run) openWireGuard(ctx context.Context) (*opened, error) {
	t, err := peers.WireGuard(ctx, r.peerEnv(), nil)
	if err != nil {
		return nil, err
	}
	return &opened{bench: fmt.Sprintf("%s:%d", testenv.SeedPostgresAddr, serverPort), pgHost: testenv.SeedPostgresAddr, pgPort: testenv.PostgresPort,
		procs: t.Procs, close: t.Close}, nil
}

// Sluice: the outlets every Sluice path uses, on the bank agent.
const (
	benchOutlet = "bench"
	pgOutlet    = "pg"
	idleOutlet  = "idle-"
	allowOutlet = "postgres-outlet"
)

// idlePortals is how many inlet/outlet pairs carry the idle connections:
// one if the agents take --max-conns, else as many as the default limit of
// 4096 connections per portal needs.
func (r *run) idlePortals() int {
	if r.maxConns {
		return 1
	}
	return (r.cfg.IdleConns + portalLimit - 1) / portalLimit
}

// transparentAgent names the analysis agent with the BPF data path.
const transparentAgent = "analysis-bpf"

// sluiceOutlets creates the bank agent's outlets for the load server,
// PostgreSQL and the idle connections.
func (r *run) sluiceOutlets(ctx context.Context) error {
	outlets := map[string]string{benchOutlet: fmt.Sprintf("%s:%d", testenv.SeedPostgresAddr, serverPort), pgOutlet: testenv.SeedPostgresAddr + ":" + testenv.PostgresPort}
	for k := 1; k <= r.idlePortals(); k++ {
		outlets[fmt.Sprint(idleOutlet, k)] = outlets[benchOutlet]
	}
	for name, to := range outlets {
		if _, err := r.sc.Bank.Ctl(ctx, "tcp-outlet", "create", "--name", name, "--to", to, "--allow", "postgres-inlet"); err != nil {
			return err
		}
	}
	return nil
}

// inlet is one inlet of a Sluice path: its name suffix, listen address and
// outlet.
type inlet struct{ name, from, outlet string }

// sluiceInlets lists a Sluice path's inlets: load server, PostgreSQL and the
// idle ones; addr gives the listen address of the i-th (0: load server, 1:
// PostgreSQL, 2..: idle).
func (r *run) sluiceInlets(prefix string, addr func(i int) string) []inlet {
	ins := []inlet{{prefix + "-bench", addr(0), benchOutlet}, {prefix + "-pg", addr(1), pgOutlet}}
	for k := 1; k <= r.idlePortals(); k++ {
		ins = append(ins, inlet{fmt.Sprintf("%s-idle-%d", prefix, k), addr(1 + k), fmt.Sprint(idleOutlet, k)})
	}
	return ins
}

// createInlets creates the inlets on agent a with the extra flags; it
// returns the opened path with the app's addresses.
func (r *run) createInlets(ctx context.Context, a *scenario.Agent, ins []inlet, dial func(from string) string, extra ...string) (*opened, error) {
	o := &opened{}
	for i, in := range ins {
		args := append([]string{"tcp-inlet", "create", "--name", in.name, "--from", in.from, "--outlet", in.outlet, "--allow", allowOutlet}, extra...)
		if _, err := a.Ctl(ctx, args...); err != nil {
			return nil, err
		}
		addr := dial(in.from)
		switch i {
		case 0:
			o.bench = addr
		case 1:
			o.pgHost, o.pgPort = splitHostPort(addr)
		default:
			o.idle = append(o.idle, addr)
		}
	}
	return o, nil
}

// deleteInlets removes the inlets again (best effort is not enough: report).
func deleteInlets(ctx context.Context, a *scenario.Agent, ins []inlet) error {
	var errs []error
	for _, in := range ins {
		if _, err := a.Ctl(ctx, "tcp-inlet", "delete", in.name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// viaGateway maps an inlet listening on 0.0.0.0:PORT to the address the app
// dials: the analysis host's 10.10.0.1:PORT.
func viaGateway(from string) string {
	_, port := splitHostPort(from)
	return testenv.SeedAnalysisGW + ":" + port
}

func (r *run) agentProcs(inlet *scenario.Agent, hub bool) []peers.Proc {
	ps := []peers.Proc{{Name: report.InletProc, Pid: inlet.Proc.Pid()}}
	if hub {
		ps = append(ps, peers.Proc{Name: report.HubProc, Pid: r.sc.Hub.Pid()})
	}
	return append(ps, peers.Proc{Name: report.OutletProc, Pid: r.sc.Bank.Proc.Pid()})
}

// restart restarts agents so that each Sluice path starts with fresh
// processes: the idle-memory figures are then against a fresh baseline, not
// a heap grown by an earlier path.
func restart(ctx context.Context, agents ...*scenario.Agent) error {
	for _, a := range agents {
		if err := a.Restart(ctx); err != nil {
			return err
		}
	}
	return nil
}

// openHub: explicit inlets on the analysis agent (no BPF), via the relay.
func (r *run) openHub(ctx context.Context) (*opened, error) {
	if err := restart(ctx, r.sc.Analysis, r.sc.Bank); err != nil {
		return nil, err
	}
	ins := r.sluiceInlets("hub", func(i int) string { return fmt.Sprintf("0.0.0.0:%d", 7601+i) })
	o, err := r.createInlets(ctx, r.sc.Analysis, ins, viaGateway, "--via", scenario.BankRelay)
	if err != nil {
		return nil, errors.Join(err, deleteInlets(context.Background(), r.sc.Analysis, ins))
	}
	o.procs = r.agentProcs(r.sc.Analysis, true)
	o.memProcs = o.procs // the hub too: it is fresh only here
	o.agents, o.hub = []*scenario.Agent{r.sc.Analysis, r.sc.Bank}, true
	o.close = func() error { return deleteInlets(context.Background(), r.sc.Analysis, ins) }
	return o, nil
}

// openSockmap is openHub with the hub restarted as `agent hub --relay
// sockmap`; closing it restarts the hub as it was.
func (r *run) openSockmap(ctx context.Context) (*opened, error) {
	if err := r.sc.RestartHub(ctx, "--relay", "sockmap"); err != nil {
		return nil, err
	}
	o, err := r.openHub(ctx)
	if err != nil {
		return nil, errors.Join(err, r.sc.RestartHub(context.Background()))
	}
	closeHub := o.close
	o.close = func() error { return errors.Join(closeHub(), r.sc.RestartHub(context.Background())) }
	return o, nil
}

// openTransparent starts a second analysis agent with the BPF data path on
// analysis_corp (only for this path, so that no other path runs through its
// programs), names the app container as a workload, and creates transparent
// inlets on virtual service addresses.
func (r *run) openTransparent(ctx context.Context) (*opened, error) {
	if err := restart(ctx, r.sc.Bank); err != nil {
		return nil, err
	}
	ticket, err := r.sc.Ticket(ctx, "--attribute", "postgres-inlet=true")
	if err != nil {
		return nil, err
	}
	a, err := r.sc.StartDatapathAgent(ctx, transparentAgent, r.seed.AnalysisHost, ticket, testenv.SeedAnalysisNet)
	if err != nil {
		return nil, err
	}
	cleanup := func() error { return a.Cleanup(context.Background()) }
	if _, err := a.Ctl(ctx, "workload", "create", scenario.AppWorkload, "--address", r.seed.App.Addr, "--attribute", scenario.AppAttribute); err != nil {
		return nil, errors.Join(err, cleanup())
	}
	// 10.200.0.11 for the load server, PostgreSQL on its service address
	// 10.200.0.10:5432, idle ones on 10.200.0.21 and up.
	ins := r.sluiceInlets("tp", func(i int) string {
		switch i {
		case 0:
			return fmt.Sprintf("10.200.0.11:%d", serverPort)
		case 1:
			return scenario.ServiceAddr
		}
		return fmt.Sprintf("10.200.0.%d:%d", 19+i, serverPort)
	})
	o, err := r.createInlets(ctx, a, ins, func(from string) string { return from },
		"--transparent", "--via", scenario.BankRelay, "--allow-local", scenario.AllowLocal)
	if err != nil {
		return nil, errors.Join(err, cleanup())
	}
	o.procs = r.agentProcs(a, true)
	o.memProcs = r.agentProcs(a, false)
	o.agents, o.hub = []*scenario.Agent{a, r.sc.Bank}, true
	o.close = cleanup
	return o, nil
}

// openDirect: explicit inlets on the analysis agent that dial the bank
// agent's --direct-listen port, no hub.
func (r *run) openDirect(ctx context.Context) (*opened, error) {
	if r.direct != "" {
		return nil, errors.New(r.direct)
	}
	if err := restart(ctx, r.sc.Analysis, r.sc.Bank); err != nil {
		return nil, err
	}
	hole, err := r.seed.AllowInbound(r.seed.BankHost, "tcp", directPort)
	if err != nil {
		return nil, err
	}
	ins := r.sluiceInlets("direct", func(i int) string { return fmt.Sprintf("0.0.0.0:%d", 7801+i) })
	o, err := r.createInlets(ctx, r.sc.Analysis, ins, viaGateway, "--direct", fmt.Sprintf("%s:%d", testenv.SeedBankUp, directPort))
	if err != nil {
		return nil, errors.Join(err, deleteInlets(context.Background(), r.sc.Analysis, ins), hole.Close())
	}
	o.procs = r.agentProcs(r.sc.Analysis, false)
	o.memProcs = o.procs
	o.agents = []*scenario.Agent{r.sc.Analysis, r.sc.Bank}
	o.close = func() error { return errors.Join(deleteInlets(context.Background(), r.sc.Analysis, ins), hole.Close()) }
	return o, nil
}

// relayedOnly keeps an agent's channels on the hub (the design of issue 15:
// docs of agent run --direct-paths): the "via hub" paths measure the relay.
var relayedOnly = []string{"--direct-paths", "off"}

// setRelayedOnly adds (on) or removes relayedOnly from the arguments the
// named agents start with next.
func (r *run) setRelayedOnly(on bool, agents ...string) {
	for _, a := range agents {
		args := r.agentArgs[a]
		for i := 0; i+1 < len(args); i++ {
			if args[i] == relayedOnly[0] && args[i+1] == relayedOnly[1] {
				args = append(args[:i:i], args[i+2:]...)
				i--
			}
		}
		if on {
			args = append(args, relayedOnly...)
		}
		r.agentArgs[a] = args
	}
}

// openDirectNAT: explicit inlets on the analysis agent to the bank agent's
// outlets, both agents with the default options (direct paths on), no
// firewall hole: the channels go straight through both NATs. The hub's CPU
// is measured too: it should carry nothing.
func (r *run) openDirectNAT(ctx context.Context) (*opened, error) {
	if r.directPaths != "" {
		return nil, errors.New(r.directPaths)
	}
	r.setRelayedOnly(false, "analysis", "bank")
	// The next path's restart starts them relayed again.
	defer r.setRelayedOnly(true, "analysis", "bank")
	if err := restart(ctx, r.sc.Analysis, r.sc.Bank); err != nil {
		return nil, err
	}
	ins := r.sluiceInlets("nat", func(i int) string { return fmt.Sprintf("0.0.0.0:%d", 7901+i) })
	o, err := r.createInlets(ctx, r.sc.Analysis, ins, viaGateway, "--via", scenario.BankRelay)
	if err != nil {
		return nil, errors.Join(err, deleteInlets(context.Background(), r.sc.Analysis, ins))
	}
	o.procs = r.agentProcs(r.sc.Analysis, true)
	o.memProcs = r.agentProcs(r.sc.Analysis, false)
	o.agents = []*scenario.Agent{r.sc.Analysis, r.sc.Bank}
	o.hubFallback = true
	o.close = func() error { return deleteInlets(context.Background(), r.sc.Analysis, ins) }
	return o, nil
}
