package chaos_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/testenv"
	"github.com/sluicehq/sluice/testenv/scenario"
)

// TestChaos runs, on one seed story: the signals (SIGTERM drains, SIGHUP
// never stops), the truncation trials (a process killed mid-stream: both
// ends see a reset), and the faults while pgbench runs. At the end no
// plaintext may have crossed a link outside the companies, and every
// process must be back to its descriptors, goroutines and pins at rest.
func TestChaos(t *testing.T) {
	cfg := chaosMode(t)
	testenv.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Minute)
	defer cancel()
	r := newRig(t, ctx)
	if why := r.quiesce(ctx); why != nil {
		t.Errorf("the story does not come to rest after it started: %v", why)
	}
	t.Run("Signals", func(t *testing.T) {
		defer r.use(t)()
		testSignals(ctx, r)
	})
	t.Run("Truncation", func(t *testing.T) {
		defer r.use(t)()
		testTruncation(ctx, r, cfg)
	})
	t.Run("Faults", func(t *testing.T) {
		defer r.use(t)()
		testFaults(ctx, r, cfg)
	})
	r.checkScans()
	if why := r.quiesce(ctx); why != nil {
		t.Errorf("after the suite: %v", why)
	}
}

// use makes the rig report to t until the returned func is called.
func (r *rig) use(t *testing.T) func() {
	prev := r.t
	r.t = t
	return func() { r.t = prev }
}

// testSignals: SIGTERM to the inlet's agent, the outlet's agent or the hub
// while a query of 4 seconds runs through the portal: the query completes,
// new connections are refused meanwhile (the one way each promises), and
// the process exits 0 once the query's connection has ended. SIGHUP stops
// none of them.
func testSignals(ctx context.Context, r *rig) {
	t := r.t
	if !r.debug {
		t.Skip("the binaries predate graceful stops (no --shutdown-timeout)")
	}
	for _, name := range processes {
		p := r.proc(name)
		if err := p.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if err := p.WaitOutput(ctx, "SIGHUP:"); err != nil {
			t.Errorf("%s after SIGHUP: %v", name, err)
		}
		select {
		case <-p.Exited():
			t.Fatalf("%s exited on SIGHUP:\n%s", name, p.OutputTail(2000))
		case <-time.After(300 * time.Millisecond):
		}
	}
	for _, name := range []string{"analysis", "bank", "hub"} {
		t.Run(name, func(t *testing.T) {
			defer r.use(t)()
			sigterm(ctx, r, name)
		})
	}
}

func sigterm(ctx context.Context, r *rig, name string) {
	t := r.t
	sleep := r.s.Seed.App.NS
	q, err := sleep.Start("psql", []string{"psql", "-h", scenario.ServiceIP, "-p", scenario.ServicePort, "-U", "postgres", "-d", "postgres",
		"-At", "-v", "ON_ERROR_STOP=1", "-c", "select 'slept' from pg_sleep(4)"},
		testenv.ProcOptions{Cgroup: r.s.Seed.App.Cgroup, Env: []string{"PGPASSWORD=" + scenario.PGPassword, "PGCONNECT_TIMEOUT=5"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.waitQuery(ctx, "pg_sleep(4)"); err != nil {
		t.Fatal(err)
	}
	p := r.proc(name)
	stopped := time.Now()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Meanwhile new connections are refused: by the kernel for the inlet's
	// agent (the pinned programs, no listener), by the inlet (a reset once
	// accepted) when the outlet's agent released its relay or the hub is
	// gone.
	refused := func() error {
		c, err := r.s.Seed.App.NS.DialTCP(ctx, scenario.ServiceAddr, 2*time.Second)
		if name == "analysis" {
			if err == nil {
				c.Close()
				return errors.New("connected")
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				return fmt.Errorf("dial: %w, want a refusal", err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("dial: %w, want the inlet to accept, then reset", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f})
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			return fmt.Errorf("read: %v, want a reset", err)
		}
		return nil
	}
	var rerr error
	for deadline := time.Now().Add(2 * time.Second); ; {
		if rerr = refused(); rerr == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if rerr != nil {
		t.Errorf("a new connection while %s drains: %v", name, rerr)
	}
	if err := q.Wait(); err != nil || strings.TrimSpace(q.Output()) != "slept" {
		t.Errorf("the query through the portal while %s drains: %v\n%s", name, err, q.OutputTail(1000))
	}
	select {
	case <-p.Exited():
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatalf("%s did not exit after its last connection ended", name)
	}
	if err := p.Wait(); err != nil {
		t.Errorf("%s exited with %v after SIGTERM, want 0:\n%s", name, err, p.OutputTail(2000))
	}
	if d := time.Since(stopped); d >= shutdownTimeout {
		t.Errorf("%s took %v to stop: it waited for the shutdown timeout, not for its connections", name, d)
	}
	want := map[string]string{"analysis": "agent draining", "bank": "agent draining", "hub": "hub stopping"}[name]
	if !strings.Contains(p.Output(), want) {
		t.Errorf("%s does not say %q:\n%s", name, want, p.OutputTail(2000))
	}
	if name == "hub" {
		for _, a := range []*scenario.Agent{r.s.Analysis, r.s.Bank} {
			if !strings.Contains(a.Proc.Output(), "the hub is shutting down; reconnecting") {
				t.Errorf("the %s agent was not told that the hub goes away", a.Name)
			}
		}
	}
	r.restart(ctx, name)
	if _, err := r.waitWorking(ctx); err != nil {
		t.Fatal(err)
	}
	for _, l := range r.quiesce(ctx) {
		t.Errorf("after the restart: %s", l)
	}
}

// waitQuery waits until PostgreSQL runs a query containing text.
func (r *rig) waitQuery(ctx context.Context, text string) error {
	sql := fmt.Sprintf("select count(*) from pg_stat_activity where state = 'active' and query like '%%%s%%' and pid <> pg_backend_pid()", text)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		out, err := r.s.Psql(ctx, r.s.Seed.Postgres.NS, testenv.SeedPostgresAddr, testenv.PostgresPort, sql)
		if err == nil && out == "1" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the query %q never ran: %q, %v", text, out, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tally counts how streams ended when a process was killed.
type tally struct {
	trials           int
	app, service     map[string]int // outcome -> trials
	restartToWorking []time.Duration
}

// testTruncation: kill -9 of the inlet's agent, the outlet's agent or the
// hub in the middle of a download and of an upload; the app and the
// service must each see a reset, every time, never a clean EOF.
func testTruncation(ctx context.Context, r *rig, cfg chaosConfig) {
	var rows []string
	for _, victim := range []string{"analysis", "bank", "hub"} {
		for _, download := range []bool{true, false} {
			dir := map[bool]string{true: "download", false: "upload"}[download]
			var tl tally
			r.t.Run(victim+"/"+dir, func(t *testing.T) {
				defer r.use(t)()
				tl = truncationTrials(ctx, r, cfg.trials, victim, download)
			})
			rows = append(rows, fmt.Sprintf("| %s | %s | %d | %s | %s | %v |", map[string]string{"analysis": "inlet agent", "bank": "outlet agent", "hub": "hub"}[victim],
				dir, tl.trials, outcomes(tl.app), outcomes(tl.service), median(tl.restartToWorking).Round(10*time.Millisecond)))
		}
	}
	r.t.Logf("kill -9 mid-stream, %d trials each:\n| killed | stream | trials | the app saw | the service saw | restart to working (median) |\n|---|---|---|---|---|---|\n%s",
		cfg.trials, strings.Join(rows, "\n"))
}

func truncationTrials(ctx context.Context, r *rig, trials int, victim string, download bool) tally {
	t := r.t
	tl := tally{app: map[string]int{}, service: map[string]int{}}
	for i := range trials {
		st, err := openStream(ctx, r, download)
		if err != nil {
			t.Fatalf("trial %d: %v", i, err)
		}
		r.kill(victim)
		a, s := waitEnd(st.app), waitEnd(st.service)
		tl.trials++
		tl.app[a.outcome()]++
		tl.service[s.outcome()]++
		if !a.reset || !s.reset {
			t.Errorf("killed mid-stream (trial %d): the app saw %s after %d bytes read, the service %s after %d",
				i, a.outcome(), a.Read, s.outcome(), s.Read)
		}
		restarted := time.Now()
		r.restart(ctx, victim)
		if _, err := r.waitWorking(ctx); err != nil {
			t.Fatal(err)
		}
		tl.restartToWorking = append(tl.restartToWorking, time.Since(restarted))
	}
	for _, l := range r.quiesce(ctx) {
		t.Errorf("after the trials: %s", l)
	}
	return tl
}

// openStream starts a stream and waits until 4 MiB have crossed. A stream
// that cannot start is tried again, up to three times, after new
// connections work: the fault this suite injects comes after.
func openStream(ctx context.Context, r *rig, download bool) (*stream, error) {
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			r.t.Logf("a stream did not start (%v); trying again", err)
			if _, werr := r.waitWorking(ctx); werr != nil {
				return nil, werr
			}
		}
		var st *stream
		if st, err = r.streams.start(ctx, r.s.Seed.App.NS, download); err != nil {
			continue
		}
		if err = waitBytes(st, 4<<20); err != nil {
			st.conn.Close()
			continue
		}
		return st, nil
	}
	return nil, err
}

func outcomes(m map[string]int) string {
	var parts []string
	for _, k := range []string{"reset", "EOF"} {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
		}
	}
	for k, n := range m {
		if k != "reset" && k != "EOF" {
			parts = append(parts, fmt.Sprintf("%d %s", n, k))
		}
	}
	return strings.Join(parts, ", ")
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}

// waitBytes waits until n bytes have crossed the stream.
func waitBytes(st *stream, n int64) error {
	deadline := time.Now().Add(20 * time.Second)
	for st.received.Load() < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d bytes crossed the portal in 20s", st.received.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// waitEnd waits for one side's end of a stream.
func waitEnd(ch <-chan streamEnd) streamEnd {
	select {
	case e := <-ch:
		return e
	case <-time.After(30 * time.Second):
		return streamEnd{ReadErr: errors.New("still open 30s after the kill")}
	}
}
