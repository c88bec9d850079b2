package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/api"
	"github.com/sluicehq/sluice/agent/hub"
	hubadmin "github.com/sluicehq/sluice/agent/hub/admin"
	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/hub/etcdstore"
	"github.com/sluicehq/sluice/agent/metrics"
	"github.com/sluicehq/sluice/cmd/internal/cli"
)

func hubCommand() *cobra.Command {
	var (
		projectDir, listen, admin, relayMode, role string
		restore, debugSocket                       string
		initDB                                     bool
		lifetime, shutdownTimeout                  time.Duration
		limits                                     hub.Limits
		logs                                       logFlags
		mf                                         metricsFlags
		sf                                         storeFlags
	)
	cmd := &cobra.Command{
		Use:   "hub --project DIR (--listen ADDR | --init | --restore FILE)",
		Short: "Run the hub: the relay both sides dial out to, and the project authority",
		Long: `Run the hub. As a relay it keeps the relay names agents claim and relays data
sessions between inlets and outlets, with splice(2) or in the kernel with a
sockmap sk_skb redirect (--relay); it never holds a key that can read them.

With --role both (the default) it also runs the project authority: it redeems
enrollment tickets, issues short-lived credentials and signs the member state,
with its records (members, used tickets, revocations) in an etcd member it
embeds in hub.etcd in the project directory (no other process, no other port).
The hub.db that 'agentctl project init' made is checked ('agent hub check') and
migrated into it once, at the first start, and kept renamed; a missing, empty
or damaged one is refused, saying how to restore a backup ('agentctl hub
backup' takes one while the hub runs; 'agent hub --restore FILE' puts it back
while the hub is stopped). --init creates the database for a project made
before project init did. --store bolt keeps the records in hub.db alone.

Several hubs share the records as a cluster: embedded members (--cluster-name,
--cluster-peers, peer TLS on certificates the project authority issues) or an
external etcd (--etcd-endpoints). A ticket is redeemed once across them, a
change made on one reaches the agents of all, and a hub cut off from the
majority refuses to enroll or issue (code no_quorum). 'agentctl hub status'
shows the cluster (docs/hub-cluster.md).

With --role relay it holds no key that can sign a credential, a member update
or a revocation, and no database: the authority runs elsewhere (agent
authority) and connects to it, agents enroll and renew with the authority end
to end through it, and it passes the authority's signed words on. A relay's
project directory needs only project.json, authority.pem, hub.key and hub.pem
(agentctl project export-relay). ` + "`" + `agentctl member` + "`" + ` and ` + "`" + `agentctl hub backup` + "`" + ` then
talk to the authority's socket, not to the relay's.

Nothing a peer can drive before it authenticates is unbounded: control
messages are at most 64 KiB, connections that have not authenticated are
capped in all and per source address (with room kept for addresses members
used), and each member's dial requests and waiting data sessions are limited.
Refusals are counted in the admin API's GET /v1/stats; docs/hub.md explains
each limit.

SIGTERM or SIGINT stops it gracefully: it refuses new connections and dials
(code going_away), tells every agent it goes away (they reconnect at once, to
another hub their ticket lists or to the hub that replaces it), and relays the data sessions it has for up to --shutdown-timeout, then
resets them; a second signal resets them at once. SIGHUP reopens --log-file
and never stops it.`,
		Example: `  agent hub --project ./project --listen 0.0.0.0:4443
  agent hub --project ./project --listen 10.0.0.1:4443 --cluster-name a \
    --cluster-peers a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,c=https://10.0.0.3:2380
  agent hub --role relay --project ./relay --listen 0.0.0.0:4443
  agent hub --restore hub.backup --project ./project`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if initDB || restore != "" {
				if projectDir == "" || listen != "" || (initDB && restore != "") {
					return cli.Usagef("--init and --restore FILE each take only --project, do their one thing and exit; then start the hub without them")
				}
				return hubDatabaseOp(cmd, projectDir, initDB, restore)
			}
			if projectDir == "" || listen == "" {
				return cli.Usagef("--project and --listen are required, e.g. agent hub --project ./project --listen 0.0.0.0:4443")
			}
			if lifetime < 10*time.Second {
				return cli.Usagef("--credential-lifetime %v is too short; use at least 10s", lifetime)
			}
			if role != "both" && role != "relay" {
				return cli.Usagef("--role %q: want both (relay and authority) or relay", role)
			}
			if !slices.Contains(relayModes, relayMode) {
				return cli.Usagef("--relay %q: want auto, splice or sockmap", relayMode)
			}
			if err := checkLimits(limits); err != nil {
				return err
			}
			if shutdownTimeout < 0 {
				return cli.Usagef("--shutdown-timeout %v: want 0 or more", shutdownTimeout)
			}
			if err := sf.check(role); err != nil {
				return err
			}
			log, stopLog, err := logs.start(cmd.Context())
			if err != nil {
				return err
			}
			defer stopLog()
			var (
				p     *authority.Project
				svc   *authority.Service
				store *etcdstore.Store
			)
			ms, err := serveMetrics(mf, log)
			if err != nil {
				return err
			}
			defer ms.Close()
			if role == "relay" {
				if p, err = authority.LoadRelay(projectDir); err != nil {
					return err
				}
			} else {
				if p, err = authority.Load(projectDir); err != nil {
					return err
				}
				auth, st, err := sf.open(cmd.Context(), p, authority.Options{CredentialLifetime: lifetime, Audit: log.Named("audit")}, log)
				if err != nil {
					return err
				}
				defer auth.Close()
				store = st
				svc = authority.NewService(auth)
				fctx, stopFollow := context.WithCancel(context.Background())
				defer stopFollow()
				follow(fctx, svc, log)
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", listen, err)
			}
			log.Info("hub listening", zap.String("listen", ln.Addr().String()), zap.String("project", p.ID), zap.String("role", role),
				zap.String("hub_address", p.HubAddress), zap.Duration("credential_lifetime", lifetime))
			sm, err := openRelay(relayMode, log)
			if err != nil {
				ln.Close()
				return err
			}
			if sm != nil {
				defer sm.Close()
			}
			limits = limits.WithDefaults()
			log.Info("hub limits", zap.Any("limits", limits))
			if svc != nil {
				if err := sf.hubCertFor(p, ln.Addr().String(), log); err != nil {
					ln.Close()
					return err
				}
			}
			var (
				srv     *hub.Hub
				cluster hub.Cluster
			)
			c := sf.cluster(store, func() *hub.Hub { return srv }, ln.Addr().String(), log)
			if c != nil {
				cluster = c
			}
			srv = hub.NewHub(p, hub.HubOptions{Authority: svc, Logger: log, Audit: log.Named("audit"), Sockmap: sm, Limits: limits, Cluster: cluster})
			if c != nil {
				cctx, stopCluster := context.WithCancel(context.Background())
				ran := make(chan struct{})
				go func() { c.Run(cctx); close(ran) }()
				defer func() { stopCluster(); <-ran }() // revokes the hub's lease: its claims vanish at once

			}
			var members metrics.Members
			if svc != nil {
				members = svc.Members
			}
			ms.start(metrics.NewHubCollector(srv, members), func() error { return metrics.HubReady(srv.Stats(), members) })
			if c != nil && ms != nil {
				ms.reg.MustRegister(metrics.NewClusterCollector(c))
			}
			if admin == "" {
				admin = hubadmin.HubSocket(projectDir)
			}
			stopAdmin, err := serveAdmin(admin, srv.AdminHandler())
			if err != nil {
				ln.Close()
				return err
			}
			defer stopAdmin()
			log.Info("hub admin API listening", zap.String("socket", admin))
			stopDebug, err := serveDebug(debugSocket)
			if err != nil {
				ln.Close()
				return err
			}
			defer stopDebug()
			context.AfterFunc(cmd.Context(), ms.stop)
			notifyState(log, "READY=1")
			return serveHub(cmd.Context(), srv, ln, shutdownTimeout, log)
		},
	}
	cmd.Flags().StringVar(&projectDir, "project", "", "project directory made by 'agentctl project init' (required)")
	cmd.Flags().StringVar(&listen, "listen", "", "address to listen on, e.g. 0.0.0.0:4443 (required)")
	cmd.Flags().StringVar(&admin, "admin", "", "unix socket (0600) for 'agentctl member' (revocations and attribute changes, with --role both) and the relay's statistics (default: hub.sock in the project directory)")
	cmd.Flags().StringVar(&role, "role", "both", "both: relay and project authority in this process; relay: a relay only, holding no signing key (the authority runs as 'agent authority' and connects to it)")
	cmd.Flags().StringVar(&relayMode, "relay", "auto", "how data sessions cross the hub: splice (splice(2)), sockmap (in the kernel with an sk_skb redirect: lower latency, no backpressure, so a session whose reader falls 64 MiB behind is reset; fails where the kernel cannot) or auto (splice for now)")
	cmd.Flags().BoolVar(&initDB, "init", false, "create the project's empty database (hub.db) and exit, for a project made before 'agentctl project init' created it; refuses if one exists (where the authority runs)")
	cmd.Flags().StringVar(&restore, "restore", "", "replace the project's database with the backup in FILE (from 'agentctl hub backup'), after checking it, and exit; the hub (or agent authority) must be stopped; the old one is kept as hub.db.bak-TIMESTAMP")
	cmd.Flags().DurationVar(&lifetime, "credential-lifetime", authority.DefaultCredentialLifetime, "validity of issued credentials; agents renew at two thirds of it (--role both)")
	cmd.Flags().DurationVar(&shutdownTimeout, "shutdown-timeout", defaultShutdownTimeout, "on SIGTERM or SIGINT, how long the data sessions relayed may go on before they are reset; the hub refuses new connections and tells agents it goes away meanwhile")
	registerDebug(cmd, &debugSocket)
	mf.register(cmd, "ready: its database is usable, or with --role relay the authority is linked")
	registerLimits(cmd, &limits)
	sf.register(cmd)
	logs.register(cmd)
	cmd.AddCommand(hubCheckCommand())
	return cmd
}

// serveHub serves until the first SIGTERM or SIGINT (ctx), then shuts the
// hub down gracefully for up to timeout, or at once at the second signal.
func serveHub(ctx context.Context, srv *hub.Hub, ln net.Listener, timeout time.Duration, log *zap.Logger) error {
	lc := lifecycleOf(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lc.now, ln) }()
	select {
	case err := <-served:
		log.Info("hub stopped")
		return err
	case <-ctx.Done():
	}
	notifyState(log, "STOPPING=1")
	log.Info("hub stopping: refusing new connections, telling agents it goes away; data sessions may end until the shutdown timeout (a second SIGTERM or Ctrl-C resets them now)",
		zap.Duration("shutdown_timeout", timeout))
	sctx, cancel := context.WithTimeout(lc.now, timeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("data sessions still open at the shutdown timeout are reset", zap.Error(err))
	}
	err := <-served
	log.Info("hub stopped")
	return err
}

// relayModes are the values of agent hub --relay.
var relayModes = []string{"auto", "splice", "sockmap"}

// openRelay opens the kernel relay if mode asks for it: nil means splice.
// auto means splice for now: the kernel gives sockmap redirects no
// backpressure (docs/datapath.md), so a session whose reader is slower
// than its sender would pile up in the hub's memory until it is reset.
func openRelay(mode string, log *zap.Logger) (*hub.Sockmap, error) {
	if mode != "sockmap" {
		log.Info("relaying data sessions with splice(2)", zap.String("relay", mode))
		return nil, nil
	}
	sm, err := hub.OpenSockmap(hub.SockmapOptions{})
	if err != nil {
		return nil, fmt.Errorf("--relay sockmap: %w", err)
	}
	log.Info("relaying data sessions in the kernel (sockmap sk_skb redirect); a session is reset when its reader falls this far behind",
		zap.Uint64("backlog_max_bytes", hub.DefaultBacklogMax))
	return sm, nil
}

// serveAdmin serves an admin API on a unix socket until stopped.
func serveAdmin(path string, h http.Handler) (stop func(), err error) {
	ln, err := api.Listen(path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return func() { srv.Close() }, nil
}
