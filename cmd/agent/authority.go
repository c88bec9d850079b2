package main

import (
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/hub"
	hubadmin "github.com/sluicehq/sluice/agent/hub/admin"
	"github.com/sluicehq/sluice/agent/hub/authority"

	"github.com/sluicehq/sluice/cmd/internal/cli"
)

func authorityCommand() *cobra.Command {
	var (
		projectDir, hubAddr, admin string
		lifetime                   time.Duration
		logs                       logFlags
	)
	cmd := &cobra.Command{
		Use:   "authority --project DIR",
		Short: "Run the project authority apart from the relay (which then runs as agent hub --role relay)",
		Long: `Run the project authority on its own: it holds the project's signing key and
its database (hub.db), redeems enrollment tickets, issues credentials and signs
every word on the members. It listens on no port: it dials out to the relay
(agent hub --role relay) at the project's hub address, or --hub, and answers the
agents through it end to end; the relay sees only ciphertext and signed
statements it cannot forge. ` + "'agentctl member'" + ` talks to its admin socket
(authority.sock in the project directory unless --admin), and so does
` + "'agentctl hub backup'" + `. Its database is checked before it starts, as
` + "`agent hub`" + ` checks it; ` + "`agent hub --init`" + ` and ` + "`agent hub --restore FILE`" + `, run
where the project directory is, create or restore it.`,
		Example: `  agent authority --project ./project
  agent authority --project ./project --hub relay.example.com:4443`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if projectDir == "" {
				return cli.Usagef("--project is required, e.g. agent authority --project ./project")
			}
			if lifetime < 10*time.Second {
				return cli.Usagef("--credential-lifetime %v is too short; use at least 10s", lifetime)
			}
			log, stopLog, err := logs.start(cmd.Context())
			if err != nil {
				return err
			}
			defer stopLog()
			p, err := authority.Load(projectDir)
			if err != nil {
				return err
			}
			if hubAddr == "" {
				hubAddr = p.HubAddress
			}
			if err := checkInChild(cmd.Context(), projectDir, ""); err != nil {
				return err
			}
			auth, err := authority.Open(p, authority.Options{CredentialLifetime: lifetime, Audit: log.Named("audit")})
			if err != nil {
				return err
			}
			defer auth.Close()
			svc := authority.NewService(auth)
			if admin == "" {
				admin = hubadmin.AuthoritySocket(projectDir)
			}
			stopAdmin, err := serveAdmin(admin, hub.AuthorityAdminHandler(svc, log))
			if err != nil {
				return err
			}
			defer stopAdmin()
			log.Info("authority admin API listening", zap.String("socket", admin))
			log.Info("authority linking to its relay", zap.String("relay", hubAddr), zap.String("project", p.ID),
				zap.Duration("credential_lifetime", lifetime))
			err = hub.RunAuthorityLink(cmd.Context(), hub.AuthorityLinkOptions{Hub: hubAddr, Service: svc, Logger: log})
			log.Info("authority stopped")
			return err
		},
	}
	cmd.Flags().StringVar(&projectDir, "project", "", "project directory made by 'agentctl project init' (required)")
	cmd.Flags().StringVar(&hubAddr, "hub", "", "HOST:PORT of the relay (default: the project's hub address)")
	cmd.Flags().StringVar(&admin, "admin", "", "unix socket (0600) for 'agentctl member' (default: authority.sock in the project directory)")
	cmd.Flags().DurationVar(&lifetime, "credential-lifetime", authority.DefaultCredentialLifetime, "validity of issued credentials; agents renew at two thirds of it")
	logs.register(cmd)
	return cmd
}
