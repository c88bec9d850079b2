// Command sluice-bench measures Sluice against raw TCP and the tools a user
// would pick instead, in the seed topology (see bench/README.md).
//
//	sluice-bench run [--quick] [--out DIR] [--readme FILE --svg FILE]   the benchmark (root)
//	    [--capture] [--metrics]                                       with observers on the Sluice paths
//	sluice-bench check [--bin DIR] results.json                       fails unless the run is complete
//	sluice-bench serve --listen ADDR                                  the load server (started by run)
//	sluice-bench client --addr ADDR --mode MODE ...                   the load client (started by run)
//	sluice-bench fwd LISTEN=TARGET...                                 the TCP forwarder (started by run)
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sluice-bench:", err)
		os.Exit(1)
	}
}

const usage = `usage: sluice-bench run|check|serve|client|fwd [flags]
  run     run the benchmark (as root): --quick, --out DIR, --readme FILE, --svg FILE, --only IDS,
          --capture, --metrics (observers on the Sluice paths), --hub-cluster N (N clustered hubs)
  check   check that results.json has every metric of every path: check [--bin DIR] FILE
  serve   the load server: --listen ADDR
  client  the load client: --addr ADDR[,ADDR...] --mode throughput|latency|setup|idle
  fwd     the TCP forwarder: LISTEN=TARGET...`

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("no command\n%s", usage)
	}
	cmds := map[string]func(context.Context, []string) error{
		"run": runBench, "check": check, "serve": serve, "client": client, "fwd": fwd,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		return fmt.Errorf("unknown command %q\n%s", args[0], usage)
	}
	return cmd(ctx, args[1:])
}
