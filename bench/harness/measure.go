package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
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

func (m *measurer) latency(ctx context.Context) error {
	for i := 1; i <= m.cfg.Repeats; i++ {
		out, err := m.clientRun(ctx, "--addr", m.o.bench, "--mode", "latency", "--duration", dur(m.cfg.Latency))
		if err != nil {
			return fmt.Errorf("request/response latency: %w", err)
		}
		l := out.Latency
		m.res.Add(report.RTTp50, l.P50us)
		m.res.Add(report.RTTp99, l.P99us)
		m.step("64-byte RTT", i, "p50 %.1f µs, p99 %.1f µs (%d round trips)", l.P50us, l.P99us, l.Count)
	}
	return nil
}

func (m *measurer) setupTime(ctx context.Context) error {
	for i := 1; i <= m.cfg.Repeats; i++ {
		out, err := m.clientRun(ctx, "--addr", m.o.bench, "--mode", "setup", "--duration", dur(m.cfg.Setup), "--max", fmt.Sprint(m.cfg.SetupMax))
		if err != nil {
			return fmt.Errorf("connection setup: %w", err)
		}
		l := out.Latency
		m.res.Add(report.SetupP50, l.P50us)
		m.res.Add(report.SetupP99, l.P99us)
		m.step("connection setup", i, "p50 %.1f µs, p99 %.1f µs (%d connections)", l.P50us, l.P99us, l.Count)
	}
	return nil
}

// pgbench runs select-only and TPC-B-like pgbench from the app container.
func (m *measurer) pgbench(ctx context.Context) error {
	for _, s := range []struct {
		id, name string
		flags    []string
	}{{report.PgSelect, "pgbench select-only", []string{"-S"}}, {report.PgTPCB, "pgbench TPC-B-like", nil}} {
		for i := 1; i <= m.cfg.Repeats; i++ {
			args := append([]string{"-n", "-c", "4", "-j", "2"}, m.cfg.Pgbench...)
			out, err := m.pg(ctx, m.seed.App.NS, m.o.pgHost, m.o.pgPort, append(args, s.flags...)...)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			tps, err := parseTPS(out)
			if err != nil {
				return err
			}
			m.res.Add(s.id, tps)
			m.step(s.name, i, "%.0f tps", tps)
		}
	}
	return nil
}

// idle opens IdleConns connections through the path's idle inlets, checks
// each end to end, and reads the agents' RSS while they are held, against
// their RSS before the first round.
func (m *measurer) idle(ctx context.Context) error {
	n := m.cfg.IdleConns
	base := map[string]float64{}
	for _, p := range m.o.memProcs {
		v, err := rssKiB(p.Pid)
		if err != nil {
			return err
		}
		base[p.Name] = v
	}
	for i := 1; i <= m.cfg.Repeats; i++ {
		pr, pw := io.Pipe()
		p, err := m.client(ctx, pr, "--addr", strings.Join(m.o.idle, ","), "--mode", "idle", "--conns", fmt.Sprint(n))
		if err != nil {
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
		m.drain(ctx)
	}
	return nil
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
		parts = append(parts, fmt.Sprintf("%s %.0f MiB, %.1f KiB/conn", proc.Name, v/1024, per))
	}
	return strings.Join(parts, "; "), nil
}

// drain waits until the path carries a fresh connection again after the
// idle ones were closed (the agents tear them down in the background).
func (m *measurer) drain(ctx context.Context) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if c, err := m.seed.App.NS.DialTCP(ctx, m.o.bench, time.Second); err == nil {
			var b [1]byte
			c.SetDeadline(time.Now().Add(2 * time.Second))
			_, err = io.ReadFull(c, b[:])
			c.Close()
			if err == nil {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
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
