package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/api"
	"github.com/sluicehq/sluice/agent/authority"
	"github.com/sluicehq/sluice/agent/relay"
	"github.com/sluicehq/sluice/cmd/internal/cli"
)

func hubCommand() *cobra.Command {
	var (
		projectDir, listen, admin string
		lifetime                  time.Duration
		logs                      logFlags
	)
	cmd := &cobra.Command{
		Use:   "hub --project DIR --listen ADDR",
		Short: "Run the hub: the project authority and the relay both sides dial out to",
		Long: `Run the hub. It redeems enrollment tickets, issues short-lived credentials,
keeps the relay names agents claim, and splices data sessions between inlets and
outlets. It never holds a key that can read them. Its database (members, used
tickets) is hub.db in the project directory.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if projectDir == "" || listen == "" {
				return errors.New("--project and --listen are required, e.g. agent hub --project ./project --listen 0.0.0.0:4443")
			}
			if lifetime < 10*time.Second {
				return fmt.Errorf("--credential-lifetime %v is too short; use at least 10s", lifetime)
			}
			log, err := cli.NewLogger(logs.level, logs.format)
			if err != nil {
				return err
			}
			defer log.Sync()
			p, err := authority.Load(projectDir)
			if err != nil {
				return err
			}
			auth, err := authority.Open(p, authority.Options{CredentialLifetime: lifetime})
			if err != nil {
				return err
			}
			defer auth.Close()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", listen, err)
			}
			log.Info("hub listening", zap.String("listen", ln.Addr().String()), zap.String("project", p.ID),
				zap.String("hub_address", p.HubAddress), zap.Duration("credential_lifetime", lifetime))
			hub := relay.NewHub(auth, relay.HubOptions{Logger: log})
			if admin == "" {
				admin = api.HubAdminSocket(projectDir)
			}
			stopAdmin, err := serveAdmin(admin, hub)
			if err != nil {
				ln.Close()
				return err
			}
			defer stopAdmin()
			log.Info("hub admin API listening", zap.String("socket", admin))
			err = hub.Serve(cmd.Context(), ln)
			log.Info("hub stopped")
			return err
		},
	}
	cmd.Flags().StringVar(&projectDir, "project", "", "project directory made by `agentctl project init` (required)")
	cmd.Flags().StringVar(&listen, "listen", "", "address to listen on, e.g. 0.0.0.0:4443 (required)")
	cmd.Flags().StringVar(&admin, "admin", "", "unix socket (0600) for `agentctl member`: revocations and attribute changes (default: hub.sock in the project directory)")
	cmd.Flags().DurationVar(&lifetime, "credential-lifetime", authority.DefaultCredentialLifetime, "validity of issued credentials; agents renew at two thirds of it")
	logs.register(cmd)
	return cmd
}

// serveAdmin serves the hub's admin API on a unix socket until stopped.
func serveAdmin(path string, hub *relay.Hub) (stop func(), err error) {
	ln, err := api.Listen(path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	srv := &http.Server{Handler: hub.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return func() { srv.Close() }, nil
}
