package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/bench/report"
)

// runBench is the orchestrator.
func runBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "very short samples (make bench-quick)")
	bin := fs.String("bin", "", "directory with agent, agentctl and wireguard (default: this binary's directory)")
	out := fs.String("out", "bench/out", "where to write results.json, results.md and results.svg")
	readme := fs.String("readme", "", "rewrite the results section of this README (between its markers)")
	svgCopy := fs.String("svg", "", "with --readme: also write the chart here (the README links to it)")
	only := fs.String("only", "", "comma-separated path IDs to run (default: all)")
	keep := fs.String("keep-dir", "", "keep the run's logs and configurations in this directory")
	capture := fs.Bool("capture", false, "while each Sluice path is measured, run agentctl capture --decrypted -w /dev/null against both its agents (the cost of capturing)")
	metrics := fs.Bool("metrics", false, "start the hub and the agents with --metrics and scrape each once a second while the Sluice paths are measured (the cost of metrics)")
	hubCluster := fs.Int("hub-cluster", 0, "run the hub as a cluster of this many hubs in one etcd cluster (2 or more; docs/hub-cluster.md): compare with one hub; the sockmap path needs one hub")
	profile := fs.String("profile", "", "save CPU profiles (pprof) of each Sluice path's inlet agent, hub and outlet agent during its first pgbench -S sample in this directory; the samples must be timed (default with --profile: --pgbench '-T 5')")
	pgbench := fs.String("pgbench", "", "the run length of each pgbench sample instead of the default (-T 4; quick: -t 40), such as '-T 10' or '-t 1000'")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *hubCluster == 1 || *hubCluster < 0 {
		return fmt.Errorf("--hub-cluster %d: want 0 (one hub) or 2 or more", *hubCluster)
	}
	if os.Geteuid() != 0 {
		return errors.New("run needs root (network namespaces): sudo make bench")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if *bin == "" {
		*bin = filepath.Dir(self)
	}
	limit, limitErr := raiseFileLimit()
	if limit == 0 {
		return limitErr
	}
	cfg := harness.Full(*bin, self)
	if *quick {
		cfg = harness.Quick(*bin, self)
	}
	cfg.FileLimit = limit
	if limitErr != nil {
		cfg.FileLimitNote = limitErr.Error()
		fmt.Printf("note: file descriptor limit %d: %v\n", limit, limitErr)
	}
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
	cfg.Dir = *keep
	cfg.Capture, cfg.Metrics = *capture, *metrics
	cfg.HubCluster = *hubCluster
	if *pgbench != "" {
		cfg.Pgbench = strings.Fields(*pgbench)
	} else if *profile != "" {
		cfg.Pgbench = []string{"-T", "5"}
	}
	cfg.Profile = *profile
	start := time.Now()
	cfg.Progress = func(s string) { fmt.Printf("%6.1fs %s\n", time.Since(start).Seconds(), s) }
	res, err := harness.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Println()
	report.WriteText(os.Stdout, res)
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	if err := res.WriteJSON(filepath.Join(*out, "results.json")); err != nil {
		return err
	}
	var md, svg bytes.Buffer
	report.WriteMarkdown(&md, res)
	if err := report.WriteSVG(&svg, res); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "results.md"), md.Bytes(), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "results.svg"), svg.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Printf("\nwrote %s/results.json, results.md, results.svg in %.0fs\n", *out, time.Since(start).Seconds())
	if *readme == "" {
		return nil
	}
	chart := "results.svg"
	if *svgCopy != "" {
		if err := os.WriteFile(*svgCopy, svg.Bytes(), 0o644); err != nil {
			return err
		}
		if rel, err := filepath.Rel(filepath.Dir(*readme), *svgCopy); err == nil {
			chart = rel
		}
	}
	section := fmt.Sprintf("Measured %s on %d CPUs (%s), kernel %s, %s; %d runs per figure, the whole run took %.0f s.\n\n![benchmark chart](%s)\n\n%s",
		res.Date, res.Machine.NProc, res.Machine.CPU, res.Machine.Kernel, res.Machine.Go, res.Config.Repeats, res.Duration, chart, md.String())
	if err := report.ReplaceSection(*readme, section); err != nil {
		return err
	}
	fmt.Printf("updated the results section of %s\n", *readme)
	return nil
}

// raiseFileLimit raises this process's soft and hard RLIMIT_NOFILE to the
// kernel's maximum (fs.nr_open), so that the hub, the agents and the load
// processes, which inherit it, can hold the idle connections. Where that is
// not permitted (no CAP_SYS_RESOURCE) it raises the soft limit to the hard
// one and says why in the error. It returns the limit in force (0 if it
// could set none).
func raiseFileLimit() (uint64, error) {
	b, err := os.ReadFile("/proc/sys/fs/nr_open")
	if err != nil {
		return 0, fmt.Errorf("raise file limit: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("raise file limit: %w", err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: n, Max: n}); err == nil {
		return n, nil
	} else if !errors.Is(err, syscall.EPERM) {
		return 0, fmt.Errorf("raise file limit to %d: %w", n, err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("raise file limit: %w", err)
	}
	// Setting it explicitly also makes children inherit it (Go would
	// otherwise restore the original soft limit in them).
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: lim.Max, Max: lim.Max}); err != nil {
		return 0, fmt.Errorf("raise file limit to %d: %w", lim.Max, err)
	}
	return lim.Max, fmt.Errorf("raising the hard limit to fs.nr_open=%d is not permitted here (no CAP_SYS_RESOURCE)", n)
}

// check fails unless results.json is complete (it never judges speed).
func check(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	bin := fs.String("bin", "bin", "directory with agent and agentctl (to see whether --direct exists)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("check: want one results.json")
	}
	res, err := report.ReadJSON(fs.Arg(0))
	if err != nil {
		return err
	}
	direct := harness.DirectUnsupported(*bin)
	directPaths := harness.DirectPathsUnsupported(*bin)
	err = report.Check(res, func(p *report.Path) error {
		switch {
		case p.ID == report.WireGuard:
			return nil
		case p.ID == report.Sockmap && harness.SockmapOverflowed(p.Unavailable):
			return nil
		case p.ID == report.DirectNAT && directPaths != "":
			return nil
		case p.ID == report.DirectNAT:
			return errors.New("the agents support --direct-paths now: the direct path through NAT must run")
		case p.ID == report.Direct && direct != "":
			return nil
		case p.ID == report.Direct:
			return errors.New("the agents support --direct now: the direct path must run")
		}
		return errors.New("only WireGuard, the sockmap path after its documented reset in a bulk sample, and the direct paths while --direct and --direct-paths do not exist may be unavailable")
	})
	if err != nil {
		return fmt.Errorf("check %s: %w", fs.Arg(0), err)
	}
	fmt.Printf("%s: %d paths complete (%d unavailable with a reason), %d targets computed\n", fs.Arg(0), len(res.Paths), unavailable(res), len(res.Targets))
	return nil
}

func unavailable(r *report.Results) int {
	n := 0
	for _, p := range r.Paths {
		if p.Unavailable != "" {
			n++
		}
	}
	return n
}
