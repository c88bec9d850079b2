package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/sluicehq/sluice/bench/report"
)

// With Config.Profile, the hub and every agent run with --debug-socket
// (cmd/agent/debug.go), and during the first pgbench select-only sample of
// each Sluice path the harness saves a CPU profile of each of the path's
// Sluice processes (inlet agent, hub, outlet agent) to
// DIR/PATH-PROCESS.pprof, read with `go tool pprof bin/agent FILE`. The
// sample must be timed (pgbench -T N): a CPU profile is asked for a
// duration.

// debugSocket is where the process named name (an agent's name, or "hub")
// serves its profiles.
func (r *run) debugSocket(name string) string {
	return filepath.Join(r.env.Dir(), name+".debug.sock")
}

// profileArgs adds --debug-socket to the agents' arguments and returns the
// hub's, if the run saves profiles.
func (r *run) profileArgs(agentArgs map[string][]string) (hubArgs []string) {
	if r.cfg.Profile == "" {
		return nil
	}
	for _, a := range []string{"analysis", "bank", transparentAgent} {
		agentArgs[a] = append(agentArgs[a], "--debug-socket", r.debugSocket(a))
	}
	return []string{"--debug-socket", r.debugSocket(report.HubProc)}
}

// ProfileSeconds is the length of the pgbench samples pgbench flags ask
// for (-T N), or an error if they are not timed.
func ProfileSeconds(pgbench []string) (int, error) {
	i := slices.Index(pgbench, "-T")
	if i < 0 || i+1 >= len(pgbench) {
		return 0, fmt.Errorf("profiles need timed pgbench samples (-T SECONDS), not %q", pgbench)
	}
	n, err := strconv.Atoi(pgbench[i+1])
	if err != nil || n < 1 {
		return 0, fmt.Errorf("profiles need timed pgbench samples: -T %q is not a number of seconds", pgbench[i+1])
	}
	return n, nil
}

// startProfiles starts CPU profiles of the path's Sluice processes for the
// i-th sample of the pgbench script, if the run saves profiles and this is
// the first select-only sample; stop waits for them and saves them.
func (m *measurer) startProfiles(ctx context.Context, script string, i int) (stop func() error, err error) {
	none := func() error { return nil }
	if m.cfg.Profile == "" || script != report.PgSelect || i != 1 || len(m.o.agents) == 0 {
		return none, nil
	}
	secs, err := ProfileSeconds(m.cfg.Pgbench)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(m.cfg.Profile, 0o755); err != nil {
		return nil, fmt.Errorf("save profiles: %w", err)
	}
	type target struct{ name, socket string }
	targets := []target{{report.InletProc, m.debugSocket(m.o.agents[0].Name)}}
	if m.o.hub {
		targets = append(targets, target{report.HubProc, m.debugSocket(report.HubProc)})
	}
	targets = append(targets, target{report.OutletProc, m.debugSocket(m.o.agents[1].Name)})
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, t := range targets {
		file := filepath.Join(m.cfg.Profile, fmt.Sprintf("%s-%s.pprof", m.res.ID, filepathSafe(t.name)))
		wg.Go(func() {
			err := fetchProfile(ctx, t.socket, secs, file)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("profile %s: %w", t.name, err))
				return
			}
			m.say("%s saved a %d s CPU profile of the %s during pgbench -S: %s", m.tag, secs, t.name, file)
		})
	}
	return func() error {
		wg.Wait()
		return errors.Join(errs...)
	}, nil
}

// fetchProfile asks the process serving socket for a CPU profile of secs
// seconds and writes it to file.
func fetchProfile(ctx context.Context, socket string, secs int, file string) error {
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}, Timeout: time.Duration(secs)*time.Second + 30*time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://debug/debug/pprof/profile?seconds=%d", secs), nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// filepathSafe turns a process name into a file name part.
func filepathSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == ' ' || c == '/' {
			b[i] = '-'
		}
	}
	return string(b)
}
