package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/sluicehq/sluice/bench/peers"
	"github.com/sluicehq/sluice/bench/report"
	"github.com/sluicehq/sluice/testenv"
)

// measurePath opens p, measures every metric on it and closes it.
func (r *run) measurePath(ctx context.Context, tag string, p path, res *report.Path) (err error) {
	r.say("%s setting up: %s", tag, p.where)
	o, err := p.open(ctx)
	if err != nil {
		return fmt.Errorf("set up %s: %w", p.id, err)
	}
	defer func() {
		if cerr := o.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close %s: %w", p.id, cerr))
		}
	}()
	if err := peers.WaitReady(ctx, r.seed, o.bench); err != nil {
		return fmt.Errorf("set up %s: %w", p.id, err)
	}
	// After open, which (re)starts the path's agents; stopped before close.
	stop, err := r.startObservers(ctx, tag, o)
	if err != nil {
		return fmt.Errorf("set up %s: %w", p.id, err)
	}
	defer func() {
		if serr := stop(); serr != nil {
			err = errors.Join(err, fmt.Errorf("observers of %s: %w", p.id, serr))
		}
	}()
	m := &measurer{run: r, tag: tag, o: o, res: res}
	return m.all(ctx)
}

type measurer struct {
	*run
	tag string
	o   *opened
	res *report.Path
}

func (m *measurer) step(what string, i int, format string, args ...any) {
	m.say("%s %s %d/%d: %s", m.tag, what, i, m.cfg.Repeats, fmt.Sprintf(format, args...))
}

func (m *measurer) all(ctx context.Context) error {
	steps := []func(context.Context) error{m.throughput1, m.throughput4, m.latency, m.setupTime, m.pgbench}
	if len(m.o.idle) > 0 {
		steps = append(steps, m.idle)
	}
	for _, s := range steps {
		if err := s(ctx); err != nil {
			return err
		}
	}
	return nil
}

func dur(d time.Duration) string { return d.String() }

// throughput1 measures single-stream throughput and, around each sample,
// the CPU time of every process on the path.
func (m *measurer) throughput1(ctx context.Context) error {
	procs := append([]peers.Proc{{Name: "server", Pid: m.server.Pid()}}, m.o.procs...)
	for i := 1; i <= m.cfg.Repeats; i++ {
		before, err := cpuSnapshot(procs)
		if err != nil {
			return err
		}
		out, err := m.clientRun(ctx, "--addr", m.o.bench, "--mode", "throughput", "--streams", "1", "--duration", dur(m.cfg.Throughput))
		if err != nil {
			return fmt.Errorf("single-stream throughput: %w", err)
		}
		settle(procs, before)
		after, err := cpuSnapshot(procs)
		if err != nil {
			return err
		}
		t := out.Throughput
		m.res.Add(report.Tput1, t.Gbps)
		gb := float64(t.Bytes) / 1e9
		m.res.AddCPU("client", out.CPUSeconds/gb)
		var parts []string
		for _, p := range procs {
			s := float64(after[p.Pid].ticks-before[p.Pid].ticks) / clockTicks / gb
			m.res.AddCPU(p.Name, s)
			parts = append(parts, fmt.Sprintf("%s %.2f", p.Name, s))
		}
		m.step("single-stream throughput", i, "%.2f Gbit/s (CPU s/GB: client %.2f, %s)", t.Gbps, out.CPUSeconds/gb, strings.Join(parts, ", "))
	}
	return nil
}

func (m *measurer) throughput4(ctx context.Context) error {
	for i := 1; i <= m.cfg.Repeats; i++ {
		out, err := m.clientRun(ctx, "--addr", m.o.bench, "--mode", "throughput", "--streams", "4", "--duration", dur(m.cfg.Throughput))
		if err != nil {
			return fmt.Errorf("4-stream throughput: %w", err)
		}
		m.res.Add(report.Tput4, out.Throughput.Gbps)
		m.step("4-stream throughput", i, "%.2f Gbit/s", out.Throughput.Gbps)
	}
	return nil
}

// latency measures 64-byte request/response times.
func (m *measurer) latency(ctx context.Context) error {
	return m.percentiles(ctx, "64-byte RTT", "round trips", report.RTTp50, report.RTTp99,
		"--mode", "latency", "--duration", dur(m.cfg.Latency))
}

// setupTime measures connection setup, connect to first reply byte.
func (m *measurer) setupTime(ctx context.Context) error {
	return m.percentiles(ctx, "connection setup", "connections", report.SetupP50, report.SetupP99,
		"--mode", "setup", "--duration", dur(m.cfg.Setup), "--max", fmt.Sprint(m.cfg.SetupMax))
}

// percentiles runs the client with args Repeats times and records the p50
// and p99 it reports.
func (m *measurer) percentiles(ctx context.Context, what, unit, p50, p99 string, args ...string) error {
	for i := 1; i <= m.cfg.Repeats; i++ {
		out, err := m.clientRun(ctx, append([]string{"--addr", m.o.bench}, args...)...)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		l := out.Latency
		m.res.Add(p50, l.P50us)
		m.res.Add(p99, l.P99us)
		m.step(what, i, "p50 %.1f µs, p99 %.1f µs (%d %s)", l.P50us, l.P99us, l.Count, unit)
	}
	return nil
}

// pgbench runs select-only and TPC-B-like pgbench from the app container,
// and around each sample reads the CPU time of every process on the path
// (and of pgbench and PostgreSQL, for reference): per transaction pgbench
// reports, in µs. The sum over the path's own processes is TunnelTotal.
func (m *measurer) pgbench(ctx context.Context) error {
	tunnel := m.o.procs
	if m.o.pgProcs != nil {
		tunnel = m.o.pgProcs
	}
	procs := append([]peers.Proc{{Name: report.PostgresProc, Pid: m.sc.Postgres.Pid(), Tree: true}}, tunnel...)
	for _, s := range []struct {
		id, name string
		flags    []string
	}{{report.PgSelect, "pgbench select-only", []string{"-S"}}, {report.PgTPCB, "pgbench TPC-B-like", nil}} {
		for i := 1; i <= m.cfg.Repeats; i++ {
			before, err := cpuSnapshot(procs)
			if err != nil {
				return err
			}
			stop, err := m.startProfiles(ctx, s.id, i)
			if err != nil {
				return err
			}
			args := append([]string{"-n", "-c", "4", "-j", "2"}, m.cfg.Pgbench...)
			out, clientTicks, err := m.pgCPU(ctx, m.seed.App.NS, m.o.pgHost, m.o.pgPort, append(args, s.flags...)...)
			if perr := stop(); err == nil {
				err = perr
			}
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			settle(procs, before) // PostgreSQL reaps the backends of pgbench's connections
			after, err := cpuSnapshot(procs)
			if err != nil {
				return err
			}
			tps, err := parseTPS(out)
			if err != nil {
				return err
			}
			tx, err := parseTransactions(out)
			if err != nil {
				return err
			}
			m.res.Add(s.id, tps)
			perTx := func(ticks uint64) float64 { return float64(ticks) / clockTicks * 1e6 / float64(tx) }
			parts := []string{fmt.Sprintf("%s %.0f", report.PgbenchProc, perTx(clientTicks))}
			m.res.AddCPUPerTx(s.id, report.PgbenchProc, perTx(clientTicks))
			// Processes of one name (socat's, one per port) count as one.
			var names []string
			ticks := map[string]uint64{}
			var total uint64
			for k, p := range procs {
				t := after[p.Pid].ticks - before[p.Pid].ticks
				if _, ok := ticks[p.Name]; !ok {
					names = append(names, p.Name)
				}
				ticks[p.Name] += t
				if k > 0 {
					total += t
				}
			}
			for _, name := range names {
				m.res.AddCPUPerTx(s.id, name, perTx(ticks[name]))
				parts = append(parts, fmt.Sprintf("%s %.0f", name, perTx(ticks[name])))
			}
			if len(tunnel) > 0 {
				m.res.AddCPUPerTx(s.id, report.TunnelTotal, perTx(total))
				parts = append(parts, fmt.Sprintf("%s %.0f", report.TunnelTotal, perTx(total)))
			}
			m.step(s.name, i, "%.0f tps, %d transactions (CPU µs/tx: %s)", tps, tx, strings.Join(parts, ", "))
		}
	}
	return nil
}

// idle opens IdleConns connections through the path's idle inlets, checks
// each end to end, and reads the agents' RSS while they are held, against
// their RSS before the first round.
func (m *measurer) idle(ctx context.Context) error {
	n := m.idleConns()
	base := map[string]float64{}
	for _, p := range m.o.memProcs {
		v, err := rssKiB(p.Pid)
		if err != nil {
			return err
		}
		base[p.Name] = v
	}
	for i := 1; i <= m.cfg.Repeats; i++ {
		// The client holds the connections until its standard input
		// closes. An *os.File, so that exec hands it over as is: with any
		// other reader, Wait would wait for the copy even after the client
		// died.
		pr, pw, err := os.Pipe()
		if err != nil {
			return fmt.Errorf("idle connections: %w", err)
		}
		p, err := m.client(ctx, pr, "--addr", strings.Join(m.o.idle, ","), "--mode", "idle", "--conns", fmt.Sprint(n))
		pr.Close()
		if err != nil {
			pw.Close()
			return err
		}
		held, err := m.holdIdle(ctx, p, n, base)
		pw.Close()
		if _, werr := waitClient(ctx, p); err == nil && werr != nil {
			err = fmt.Errorf("idle connections: %w", werr)
		}
		if err != nil {
			return err
		}
		m.step("idle connections", i, "%d held; %s", n, held)
		// The agents tear the connections down in the background: wait
		// until the path carries a fresh one again.
		if err := peers.WaitReady(ctx, m.seed, m.o.bench); err != nil {
			return fmt.Errorf("after idle connections: %w", err)
		}
	}
	return nil
}

// Descriptors per idle portal connection (measured): an agent holds two
// sockets; the hub two sockets and, for its splice in each direction, a
// pipe (two descriptors) each.
const (
	agentFDsPerConn = 2
	hubFDsPerConn   = 6
	fdReserve       = 1000 // for everything else a process holds
)

// idleConns is how many idle connections the path holds: IdleConns, or
// fewer (in hundreds) if every process on it could not hold them within the
// file descriptor limit; the path records why.
func (m *measurer) idleConns() int {
	n := m.cfg.IdleConns
	per := agentFDsPerConn
	if m.o.hub || m.o.hubFallback {
		per = hubFDsPerConn
	}
	if m.cfg.FileLimit > 0 {
		if fit := (int(m.cfg.FileLimit) - fdReserve) / per / 100 * 100; fit < n {
			m.res.IdleNote = fmt.Sprintf("%d idle connections instead of %d: a process on this path needs %d file descriptors per connection and the limit is %d (%s)",
				fit, n, per, m.cfg.FileLimit, m.cfg.FileLimitNote)
			m.say("%s note: %s", m.tag, m.res.IdleNote)
			n = fit
		}
	}
	m.res.IdleConns = n
	return n
}

// holdIdle waits until the client holds its connections and records the
// RSS per connection of each agent.
func (m *measurer) holdIdle(ctx context.Context, p *testenv.Process, n int, base map[string]float64) (string, error) {
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := p.WaitOutput(wctx, "holding"); err != nil {
		return "", fmt.Errorf("idle connections: %w", err)
	}
	time.Sleep(200 * time.Millisecond) // let the agents finish their bookkeeping
	var parts []string
	for _, proc := range m.o.memProcs {
		v, err := rssKiB(proc.Pid)
		if err != nil {
			return "", err
		}
		per := (v - base[proc.Name]) / float64(n)
		m.res.AddMemory(proc.Name, per)
		parts = append(parts, fmt.Sprintf("%s %.0f MiB, %.1f KiB/conn, %d fds", proc.Name, v/1024, per, openFiles(proc.Pid)))
	}
	return strings.Join(parts, "; "), nil
}

type cpuSample struct {
	ticks    uint64
	children int
}

func cpuSnapshot(procs []peers.Proc) (map[int]cpuSample, error) {
	out := map[int]cpuSample{}
	for _, p := range procs {
		t, err := cpuTicks(p.Pid, p.Tree)
		if err != nil {
			return nil, fmt.Errorf("read cpu of %s: %w", p.Name, err)
		}
		s := cpuSample{ticks: t}
		if p.Tree {
			s.children = len(descendants(p.Pid))
		}
		out[p.Pid] = s
	}
	return out, nil
}

// settle waits (up to a second) until forking servers are back to the
// children they had before, so that a finished connection's child has been
// reaped into its parent's cutime/cstime.
func settle(procs []peers.Proc, before map[int]cpuSample) {
	deadline := time.Now().Add(time.Second)
	for _, p := range procs {
		if !p.Tree {
			continue
		}
		for len(descendants(p.Pid)) > before[p.Pid].children && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func splitHostPort(addr string) (string, string) {
	h, p, _ := net.SplitHostPort(addr)
	return h, p
}
