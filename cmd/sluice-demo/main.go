// Command sluice-demo plays the seed scenario end to end on this machine, in
// network namespaces: a Node.js app in Analysis Corp's network creates a table
// in Bank Corp's PostgreSQL, inserts rows and reads them back, through an
// end-to-end encrypted portal (direct between the agents where the hub can
// bring them together, else via the hub). By default the app dials
// PostgreSQL's service address 10.200.0.10:5432 and the BPF data path steers
// it into the agent (--mode transparent); --mode explicit has it dial the
// inlet sluice:15432 instead, and --mode both shows one after the other. It
// needs root, and cleans up after itself, also on Ctrl-C or failure.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/testenv"
	"github.com/sluicehq/sluice/testenv/scenario"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice-demo: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("sluice-demo", flag.ContinueOnError)
	self, _ := os.Executable()
	bin := fs.String("bin", filepath.Dir(self), "directory holding the agent and agentctl binaries")
	app := fs.String("app", "testenv/scenario/app", "directory of the Node.js app (with node_modules installed)")
	keep := fs.Bool("keep", false, "keep the working directory (logs, project, state) after the run")
	modeName := fs.String("mode", string(scenario.Transparent), "how the app reaches PostgreSQL: transparent (service address 10.200.0.10:5432, BPF data path), explicit (inlet sluice:15432) or both")
	if err := fs.Parse(args); err != nil {
		return err
	}
	mode, err := scenario.ParseMode(*modeName)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("the demo builds network namespaces and needs root; run it with sudo (make demo does)")
	}
	appDir, err := filepath.Abs(*app)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(appDir, "node_modules", "pg")); err != nil {
		return fmt.Errorf("the app's dependencies are missing in %s: run `npm ci` there (make demo does)", appDir)
	}
	start := time.Now()
	env, err := testenv.New(testenv.Options{Keep: *keep})
	if err != nil {
		return err
	}
	var s *scenario.Scenario
	defer func() {
		fmt.Fprintln(out, "==> cleaning up agents, BPF programs and pins, namespaces, processes and cgroups")
		if s != nil {
			if err := s.Close(); err != nil {
				fmt.Fprintf(out, "cleanup: %v\n", err)
			}
		}
		if err := env.Close(); err != nil {
			fmt.Fprintf(out, "cleanup: %v\n", err)
		}
		if *keep {
			fmt.Fprintf(out, "kept logs and state in %s\n", env.Dir())
		}
	}()
	progress := func(s string) { fmt.Fprintf(out, "==> %s\n", s) }
	s, err = scenario.New(env, scenario.Options{Bin: *bin, AppDir: appDir, Progress: progress, Mode: mode})
	if err != nil {
		return err
	}
	if err := s.Start(ctx); err != nil {
		return err
	}
	if mode == scenario.Explicit || mode == scenario.Both {
		if err := runApp(ctx, s, out, "sluice", scenario.InletPort, "the explicit inlet"); err != nil {
			return err
		}
	}
	if mode == scenario.Transparent || mode == scenario.Both {
		if err := runApp(ctx, s, out, scenario.ServiceIP, scenario.ServicePort, "PostgreSQL's service address, steered into the agent by BPF"); err != nil {
			return err
		}
	}
	progress("analysis_corp agent status")
	st, err := s.Analysis.Ctl(ctx, "status")
	if err != nil {
		return err
	}
	fmt.Fprint(out, indent(st))
	if mode != scenario.Explicit {
		progress("analysis_corp data path status (kernel counters)")
		st, err := s.Analysis.Ctl(ctx, "datapath", "status")
		if err != nil {
			return err
		}
		fmt.Fprint(out, indent(st))
	}
	fmt.Fprintf(out, "\nThe example run was successful: the app in analysis_corp queried bank_corp's PostgreSQL through an end-to-end encrypted portal %s (%s, %.1fs).\n",
		portalPath(ctx, s.Analysis), mode, time.Since(start).Seconds())
	return nil
}

// portalPath says how the analysis agent's channels went, from its status:
// direct between the agents (the hub only brought them together, docs/
// direct-paths.md), through the hub, or some of each.
func portalPath(ctx context.Context, a *scenario.Agent) string {
	out, err := a.Ctl(ctx, "status", "-o", "json")
	if err != nil {
		return "(its path unknown: " + err.Error() + ")"
	}
	var st struct {
		Direct struct {
			Direct  int64 `json:"channels_direct"`
			Relayed int64 `json:"channels_relayed"`
		} `json:"direct_paths"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return "(its path unknown: read the status: " + err.Error() + ")"
	}
	switch d := st.Direct; {
	case d.Direct > 0 && d.Relayed == 0:
		return "straight between the two agents, through both companies' firewalls (the hub only brought them together)"
	case d.Direct > 0:
		return fmt.Sprintf("on %d channels straight between the agents and %d via the hub", d.Direct, d.Relayed)
	}
	return "via the hub"
}

// runApp runs the Node.js app against host:port and prints its output.
func runApp(ctx context.Context, s *scenario.Scenario, out io.Writer, host, port, what string) error {
	fmt.Fprintf(out, "==> analysis_corp: running the Node.js app against %s:%s (%s)\n", host, port, what)
	text, err := s.RunAppAt(ctx, host, port, "")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		fmt.Fprintf(out, "    %s\n", line)
	}
	return nil
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}
