package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/api"
	"github.com/sluicehq/sluice/agent/api/server"
	"github.com/sluicehq/sluice/agent/daemon"
	"github.com/sluicehq/sluice/agent/metrics"
	"github.com/sluicehq/sluice/agent/portal"
	"github.com/sluicehq/sluice/cmd/internal/cli"
	"github.com/sluicehq/sluice/loader"
)

func runCommand() *cobra.Command {
	var (
		stateDir, ticket, socket string
		direct, directPaths      string
		maxConns                 int
		shutdownTimeout          time.Duration
		warmIdle                 time.Duration
		debugSocket              string
		logs                     logFlags
		configPath               string
		dp                       datapathFlags
		mf                       metricsFlags
		kf                       kubeFlags
	)
	cmd := &cobra.Command{
		Use:   "run (--state-dir DIR | --config FILE) [--ticket TICKET|@FILE|env:NAME] [--api PATH] [--datapath auto|on|off] [--bpf-dir DIR] [--bridge NAME]... [--routed PATTERN]...",
		Short: "Run the agent on this host",
		Long: `Run the agent: create (or load) the node identity in --state-dir, enroll
with the hub using --ticket the first time, keep a credential renewed, and serve
the local API that agentctl uses. An agent restarted on the same state directory
needs no ticket; it restores its relays and portals. A --ticket the state directory
redeemed before is ignored (so a fixed command line works at every start); one agent
runs on a state directory at a time.

Transparent inlets need the BPF data path (Linux, root): with --datapath auto
(the default) the agent loads it if the kernel can run it and warns otherwise;
on makes start-up fail without it, saying whether the kernel lacks a feature
or the agent the privileges (CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_SYS_PTRACE:
run it as root, or with those, docs/deploy.md); off never loads it. Its programs and maps
are pinned under --bpf-dir and stay when the agent stops, so the kernel keeps
refusing connections to transparent inlets (fail closed); 'agent cleanup'
removes them. That holds only if --bpf-dir is on the host's bpffs, not on one
that lives in the agent's own mount namespace (a container without
-v /sys/fs/bpf:/sys/fs/bpf, or 'ip netns exec', which mounts /sys anew): then
on refuses to start, auto logs an error, and 'agentctl datapath status' says
"pins: ephemeral". The data path serves the containers on --bridge (every
bridge by default) and the pods on routed veths whose host-side names match
--routed (none by default; --routed 'cali*' for Calico, 'lxc*' for Cilium):
docs/datapath.md, "Routed veths".

--config FILE is a YAML file (docs/config.md) with the agent's settings (hub,
ticket_file, state_dir, api, datapath) and the relays, inlets, outlets and
workloads it must run. Flags given on the command line override the file's
settings. The whole file is checked before anything starts: a file that is
wrong stops the agent with one line naming the file, the line and the field,
exit status 2. Once started, the agent is made to match the file, as
'agentctl apply -f FILE' would (deleting what the file does not list, of the
kinds it lists). SIGHUP reads the file again and applies it; a file that is
wrong then is logged and the running configuration kept.

--kubernetes makes the running pods of this node (--node-name, default
$NODE_NAME) workloads, with their labels, namespace, service account and name
as k8s:... attributes (docs/kubernetes-workloads.md); the agent is not ready
until it has listed them.

SIGTERM or SIGINT stops it gracefully: it takes no new connections (the
kernel refuses them for transparent inlets), releases its relays at the hub,
and lets the live connections go on for up to --shutdown-timeout, then resets
them; a second signal resets them at once. SIGHUP reopens --log-file, reloads
--config, and never stops it. Exit status 77 means the hub says this node is no longer a member
(revoked): restarting it cannot help.`,
		Example: `  agent run --state-dir /var/lib/sluice --ticket @bank.ticket
  agent run --state-dir /var/lib/sluice-b --api /run/sluice/b.sock --datapath off   # a second agent on this host`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var rc *runConfig
			if configPath != "" {
				f, err := loadConfig(configPath)
				if err != nil {
					return err
				}
				rc = &runConfig{path: configPath, file: f}
				rc.settings(cmd, &stateDir, &ticket, &socket, &dp.mode, &kf)
			}
			if stateDir == "" {
				return cli.Usagef("--state-dir is required, e.g. --state-dir /var/lib/sluice")
			}
			if maxConns < 0 {
				return cli.Usagef("--max-conns %d: want a positive number (0 for the default, 4096)", maxConns)
			}
			if err := dp.check(); err != nil {
				return err
			}
			if err := kf.check(); err != nil {
				return err
			}
			if warmIdle < 0 || warmIdle > portal.DefaultWarmIdle {
				return cli.Usagef("--warm-idle %v: want 0 (no warm channels) to %v", warmIdle, portal.DefaultWarmIdle)
			}
			if warmIdle == 0 {
				warmIdle = -1 // the portals' "never"
			}
			if directPaths != "auto" && directPaths != "off" {
				return cli.Usagef("--direct-paths %q: want auto or off", directPaths)
			}
			if shutdownTimeout < 0 {
				return cli.Usagef("--shutdown-timeout %v: want 0 or more", shutdownTimeout)
			}
			log, stopLog, err := logs.start(cmd.Context())
			if err != nil {
				return err
			}
			defer stopLog()
			if ticket, err = ticketFromEnv(ticket); err != nil {
				return err
			}
			if ticket, err = cli.ReadSecret("--ticket", ticket); err != nil {
				return err
			}
			if rc != nil {
				if err := rc.checkTicket(ticket); err != nil {
					return err
				}
			}
			if socket == "" {
				socket = api.DefaultSocket
			}
			ln, err := api.Listen(socket)
			if err != nil {
				return err
			}
			defer os.Remove(socket)
			ms, err := serveMetrics(mf, log)
			if err != nil {
				ln.Close()
				return err
			}
			defer ms.Close()
			ctx := cmd.Context()
			a, err := daemon.Start(ctx, daemon.Options{StateDir: stateDir, Ticket: ticket, Logger: log,
				Datapath: dp.mode, BPFDir: dp.dir, Bridges: dp.bridges, Routed: dp.routed, Accelerate: dp.accel, DirectListen: direct, MaxConns: maxConns,
				WarmIdle: warmIdle, Timings: ms.timings(), DirectPaths: directPaths != "off"})
			if err != nil {
				ln.Close()
				return err
			}
			if rc != nil {
				a.Hold(holdName, errConfigPending) // until applyConfig below
			}
			podSrc, err := kf.start(ctx, a, log)
			if err != nil {
				ln.Close()
				return errors.Join(err, a.Close())
			}
			defer podSrc.stop()
			ms.start(metrics.NewAgentCollector(a), func() error {
				return errors.Join(metrics.AgentReady(a.Status(), a.Datapath(), dp.mode == daemon.DatapathOn, time.Now()), podSrc.ready())
			})
			st := a.Status()
			if rc != nil {
				if err := rc.checkHub(st.Hub.Hub); err != nil {
					ln.Close()
					return errors.Join(err, a.Close())
				}
			}
			log.Info("agent ready", zap.String("node", st.Node), zap.String("project", st.Project),
				zap.String("hub", st.Hub.Hub), zap.String("api", socket))
			srv := &http.Server{Handler: server.Handler(a), ReadHeaderTimeout: 10 * time.Second}
			go srv.Serve(ln)
			stopDebug, err := serveDebug(debugSocket)
			if err != nil {
				srv.Close()
				return errors.Join(err, a.Close())
			}
			defer stopDebug()
			if rc != nil {
				err := applyConfig(ctx, log, socket, rc.path, rc.file)
				rc.record(a, err)
				if err != nil {
					log.Error("configuration not fully applied; fix it and send SIGHUP", zap.Error(err))
				}
				reload := func() { rc.reload(ctx, log, socket, a) }
				logs.reload.Store(&reload)
			}
			notifyState(log, "READY=1\nSTATUS=enrolled, portals up")
			lc := lifecycleOf(ctx)
			var stopErr error
			select {
			case <-ctx.Done():
				ms.stop()
				notifyState(log, "STOPPING=1")
				log.Info("agent stopping: no new connections; live ones may end until the shutdown timeout (a second SIGTERM or Ctrl-C resets them now)",
					zap.Duration("shutdown_timeout", shutdownTimeout))
				dctx, cancel := context.WithTimeout(lc.now, shutdownTimeout)
				if err := a.Drain(dctx); err != nil {
					log.Warn("connections still open at the shutdown timeout are reset", zap.Error(err))
				}
				cancel()
			case <-a.Done():
				stopErr = a.Err()
				log.Error("agent stopping: the hub says this node is no longer a member; enroll it again with a new ticket", zap.Error(stopErr))
			}
			srv.Close()
			podSrc.stop()
			err = a.Close()
			log.Info("agent stopped")
			return errors.Join(stopErr, err)
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "YAML configuration file (docs/config.md): the agent settings below that the command line does not give, and the relays, inlets, outlets and workloads to run; SIGHUP reloads it")
	cmd.Flags().StringVar(&stateDir, "state-dir", "", "directory for the identity key, credential and saved portals (required)")
	cmd.Flags().StringVar(&ticket, "ticket", "", "enrollment ticket, or @FILE to read it from a file, or env:NAME from the environment variable NAME (needed only the first time; ignored once redeemed)")
	cmd.Flags().StringVar(&socket, "api", "", fmt.Sprintf("unix socket of the local API (default %s)", api.DefaultSocket))
	cmd.Flags().StringVar(&direct, "direct-listen", "", "also accept portal channels straight from inlets (tcp-inlet --direct) on ADDR:PORT, without the hub; this opens a listening port (default: none)")
	cmd.Flags().IntVar(&maxConns, "max-conns", 0, "open connections allowed per inlet and per outlet; more are refused with a reset (default 4096)")
	cmd.Flags().DurationVar(&warmIdle, "warm-idle", portal.DefaultWarmIdle, "how long a channel whose connection ended stays open to carry the inlet's next one without a new handshake, at most 30s; 0 turns warm channels off")
	cmd.Flags().StringVar(&directPaths, "direct-paths", "auto", "auto: channels go straight to the peer agent when the hub can coordinate a TCP simultaneous open between both agents' NATs, through the hub otherwise (docs/direct-paths.md); off: always through the hub")
	cmd.Flags().DurationVar(&shutdownTimeout, "shutdown-timeout", defaultShutdownTimeout, "on SIGTERM or SIGINT, how long live connections may go on before they are reset; no new ones are taken meanwhile")
	registerDebug(cmd, &debugSocket)
	mf.register(cmd, "ready: credential valid, hub connected, data path attached when --datapath on or a transparent inlet needs it")
	dp.register(cmd)
	kf.register(cmd)
	logs.register(cmd)
	return cmd
}

type datapathFlags struct {
	mode, dir, accel string
	bridges, routed  []string
}

func (d *datapathFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&d.mode, "datapath", daemon.DatapathAuto, "BPF data path for transparent inlets: auto (if the kernel can), on (required, with pins that outlive the agent) or off")
	cmd.Flags().StringVar(&d.dir, "bpf-dir", loader.DefaultPinDir, "where the data path's maps and links are pinned")
	cmd.Flags().StringVar(&d.accel, "accelerate", daemon.DatapathAuto, "socket acceleration of transparent inlets (sockops + sk_msg, the agent's writes go straight into the app's socket): auto (if the kernel can), on (required) or off")
	cmd.Flags().StringArrayVar(&d.bridges, "bridge", nil, "bridge whose containers the data path serves (repeatable; default every bridge)")
	cmd.Flags().StringArrayVar(&d.routed, "routed", nil, "name pattern of routed veths (a pod's host-side veth on no bridge, as Calico's 'cali*' or Cilium's 'lxc*') whose pods the data path serves (repeatable; default none)")
}

func (d *datapathFlags) check() error {
	switch d.mode {
	case daemon.DatapathAuto, daemon.DatapathOn, daemon.DatapathOff:
	default:
		return cli.Usagef("--datapath %q: want auto, on or off", d.mode)
	}
	for _, p := range d.routed {
		if err := loader.CheckRoutedPattern(p); err != nil {
			return cli.Usagef("--routed: %v", err)
		}
	}
	switch d.accel {
	case daemon.DatapathAuto, daemon.DatapathOn, daemon.DatapathOff:
		return nil
	}
	return cli.Usagef("--accelerate %q: want auto, on or off", d.accel)
}
