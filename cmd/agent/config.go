package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/api"
	"github.com/sluicehq/sluice/agent/config"
	"github.com/sluicehq/sluice/agent/wire"
)

// runConfig is `agent run --config`: the file, as read at start.
type runConfig struct {
	path string
	file *config.File
}

// errConfigPending holds the agent back from ready until its file is applied,
// so that nothing that waits for readiness (agentctl wait --ready in a compose
// health check, a readiness probe on /readyz) starts before the file's inlets
// exist.
var errConfigPending = errors.New("the configuration file is not applied yet")

// holdName is the agent's readiness hold for its configuration file.
const holdName = "configuration"

// record keeps the outcome of applying the file as the agent's readiness:
// a file not applied in full holds it back until a SIGHUP applies it.
func (rc *runConfig) record(a holder, err error) {
	if err != nil {
		err = fmt.Errorf("%s not fully applied (fix it and send SIGHUP): %w", rc.path, err)
	}
	a.Hold(holdName, err)
}

// holder is the agent as record needs it.
type holder interface{ Hold(name string, err error) }

// loadConfig reads and checks the whole file; its error names the file
// and matches config.ErrInvalid when the file is wrong (exit status 2).
func loadConfig(path string) (*config.File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w: %w", err, config.ErrInvalid)
	}
	f, err := config.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("--config %s: %w", path, err)
	}
	return f, nil
}

// settings fills the flags the command line did not give from the file's
// agent settings: flags override the file.
func (rc *runConfig) settings(cmd *cobra.Command, stateDir, ticket, socket, datapath *string, kf *kubeFlags) {
	f := rc.file
	set := func(flag string, v *string, from string) {
		if from != "" && !cmd.Flags().Changed(flag) {
			*v = from
		}
	}
	set("state-dir", stateDir, f.StateDir)
	if f.TicketFile != "" {
		set("ticket", ticket, "@"+f.TicketFile)
	}
	set("api", socket, f.API)
	set("datapath", datapath, f.Datapath)
	if k := f.Kubernetes; k != nil {
		if !cmd.Flags().Changed("kubernetes") {
			kf.enabled = k.Enabled
		}
		set("node-name", &kf.node, k.NodeName)
		set("kubeconfig", &kf.kubeconfig, k.Kubeconfig)
	}
}

// checkTicket refuses, before the agent enrolls with it, a ticket for
// another hub than the file's.
func (rc *runConfig) checkTicket(ticket string) error {
	if ticket == "" || rc.file.Hub == "" {
		return nil
	}
	t, err := wire.ParseTicket(ticket)
	if err != nil {
		return nil // the agent says what is wrong with it
	}
	return rc.checkHub(t.Hub)
}

// checkHub refuses an agent whose hub is not the file's.
func (rc *runConfig) checkHub(hub string) error {
	if rc.file.Hub != "" && rc.file.Hub != hub {
		return fmt.Errorf("--config %s: hub: the agent's hub is %s, the file says %s (the ticket names the hub; enroll with a ticket for %s): %w",
			rc.path, hub, rc.file.Hub, rc.file.Hub, config.ErrInvalid)
	}
	return nil
}

// applyConfig makes the agent serving socket match f, logging each change.
func applyConfig(ctx context.Context, log *zap.Logger, socket, path string, f *config.File) error {
	c := api.NewClient(socket)
	cur, err := config.Read(ctx, c)
	if err != nil {
		return err
	}
	plan := config.Diff(f, cur)
	if plan.Empty() {
		log.Info("configuration applied: no changes", zap.String("config", path))
		return nil
	}
	err = plan.Apply(ctx, c, func(s config.Step) { log.Info("configuration: "+s.String(), zap.String("config", path)) })
	if err != nil {
		return fmt.Errorf("apply %s: %w", path, err)
	}
	log.Info("configuration applied", zap.String("config", path), zap.Int("changes", len(plan.Steps)))
	return nil
}

// reload is SIGHUP with --config: the file read again and applied; a file
// that is not valid is logged and the running configuration kept.
func (rc *runConfig) reload(ctx context.Context, log *zap.Logger, socket string, a holder) {
	f, err := loadConfig(rc.path)
	if err != nil {
		log.Error("SIGHUP: configuration not reloaded; the running configuration stays", zap.Error(err))
		return
	}
	if ch := restartOnly(rc.file, f); len(ch) > 0 {
		log.Warn("SIGHUP: these settings take effect only when the agent restarts", zap.String("config", rc.path),
			zap.String("changed", strings.Join(ch, ", ")))
	}
	log.Info("SIGHUP: reloading the configuration", zap.String("config", rc.path))
	err = applyConfig(ctx, log, socket, rc.path, f)
	rc.record(a, err)
	if err != nil {
		log.Error("SIGHUP: configuration not fully applied; fix it and send SIGHUP again", zap.Error(err))
	}
}

// restartOnly lists the agent settings that differ between two files.
func restartOnly(old, new *config.File) []string {
	var ch []string
	for _, s := range []struct{ name, a, b string }{
		{"hub", old.Hub, new.Hub}, {"ticket_file", old.TicketFile, new.TicketFile}, {"state_dir", old.StateDir, new.StateDir},
		{"api", old.API, new.API}, {"datapath", old.Datapath, new.Datapath},
		{"kubernetes", fmt.Sprint(old.Kubernetes), fmt.Sprint(new.Kubernetes)},
	} {
		if s.a != s.b {
			ch = append(ch, s.name)
		}
	}
	return ch
}
