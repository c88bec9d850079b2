package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/agent/api"
	"github.com/sluicehq/sluice/agent/api/apitype"
	"github.com/sluicehq/sluice/agent/buildinfo"
	"github.com/sluicehq/sluice/cmd/internal/cli"
)

// versions is what `agentctl version -o json|yaml` prints.
type versions struct {
	Client apitype.Version  `json:"client"`
	Agent  *apitype.Version `json:"agent,omitempty"`
}

func versionCommand(e *env) *cobra.Command {
	var (
		format     string
		clientOnly bool
	)
	cmd := &cobra.Command{
		Use:   "version [--client]",
		Short: "Print agentctl's version, and the running agent's",
		Long: `Print agentctl's build (module version, VCS revision, Go version) and the
running agent's, asked over its API. Builds that differ are named so; exit status
3 says no agent runs on the socket (--client prints agentctl's alone).`,
		Example: `  agentctl version
  agentctl version --client -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := versions{Client: buildinfo.Get()}
			var agentErr error
			if !clientOnly {
				av, err := e.client().Version(cmd.Context())
				if err == nil {
					v.Agent = &av
				}
				agentErr = err
			}
			if err := e.emit(format, v, func(w io.Writer) {
				fmt.Fprintf(w, "agentctl: %s\n", buildinfo.String(v.Client))
				switch {
				case v.Agent != nil:
					fmt.Fprintf(w, "agent:    %s\n", buildinfo.String(*v.Agent))
					if !buildinfo.Same(v.Client, *v.Agent) {
						fmt.Fprintf(w, "agentctl and the agent at %s are different builds: commands the agent does not know fail\n", e.agentSocket())
					}
				case errors.Is(agentErr, api.ErrNoAgent):
					fmt.Fprintf(w, "agent:    none running at %s\n", e.agentSocket())
				}
			}); err != nil {
				return err
			}
			if agentErr != nil {
				return fmt.Errorf("ask the agent its version: %w", agentErr)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print agentctl's version only; ask no agent")
	outputFlag(cmd, &format)
	return cmd
}

// readiness says why the agent is not ready yet ("" when it is): the same
// conditions as the agent's /readyz, from its status.
func readiness(ctx context.Context, c *api.Client) (string, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return "", err
	}
	if !time.Now().Before(st.Credential.Expires) {
		return fmt.Sprintf("its credential expired at %s", st.Credential.Expires.Format(time.RFC3339)), nil
	}
	if !st.Hub.Connected {
		why := "not connected to the hub " + st.Hub.Hub
		if st.Hub.LastError != "" {
			why += " (" + st.Hub.LastError + ")"
		}
		return why, nil
	}
	dp, err := c.Datapath(ctx)
	if err != nil {
		return "", err
	}
	if dp.Enabled && dp.Error != "" {
		return "its data path is not attached: " + dp.Error, nil
	}
	if len(st.Pending) > 0 {
		return "waiting for " + strings.Join(st.Pending, "; "), nil
	}
	return "", nil
}

// errNotReady: the agent answered but was not ready at the timeout.
var errNotReady = errors.New("the agent is not ready")

func waitCommand(e *env) *cobra.Command {
	var (
		ready                   bool
		timeout                 time.Duration
		project, hubAdminSocket string
	)
	cmd := &cobra.Command{
		Use:   "wait --ready [--timeout D] [--project DIR | --hub-admin SOCKET]",
		Short: "Wait until the agent (or the hub) answers and is ready, for scripts",
		Long: `Wait until the agent answers on its API and is ready: its credential is valid,
it is connected to the hub, and its BPF data path is attached if it runs one.
With --project DIR or --hub-admin SOCKET, wait instead until the hub (or the
authority) of that project answers on its admin socket, so that agents started
next can enroll. Exit status 0 once it is; at --timeout, 1 with the reason (3
if nothing ever answered on the socket).`,
		Example: `  agent hub --project ./project --listen 0.0.0.0:4443 &
  agentctl wait --ready --project ./project
  agent run --state-dir /var/lib/sluice --ticket @bank.ticket &
  agentctl wait --ready --timeout 30s && agentctl relay create postgres`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !ready {
				return cli.Usagef("say what to wait for: --ready")
			}
			if timeout <= 0 {
				return cli.Usagef("--timeout %v: want a positive duration, e.g. 30s", timeout)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			what := "agent at " + e.agentSocket()
			check := func(ctx context.Context) (string, error) { return readiness(ctx, e.client()) }
			if project != "" || hubAdminSocket != "" {
				what = "hub"
				check = func(ctx context.Context) (string, error) {
					a, err := hubAdmin(hubAdminSocket, project) // the socket of the moment
					if err == nil {
						_, err = a.Members(ctx)
					}
					return "", err
				}
			}
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			var why string // the last reason the agent gave, when it answered
			var err error  // the last failure to get an answer
			for {
				w, cerr := check(ctx)
				switch {
				case cerr == nil && w == "":
					fmt.Fprintf(e.out, "%s is ready\n", what)
					return nil
				case cerr == nil:
					why, err = w, nil
				case ctx.Err() != nil && (why != "" || err != nil):
					// The timeout cut a request short: the attempt before says why.
				default:
					err = cerr
				}
				select {
				case <-tick.C:
					continue
				case <-ctx.Done():
				}
				if cmd.Context().Err() != nil {
					return cmd.Context().Err()
				}
				if err != nil {
					return fmt.Errorf("wait %v for the %s: %w", timeout, strings.Fields(what)[0], err)
				}
				return fmt.Errorf("wait %v for the %s: %w: %s", timeout, strings.Fields(what)[0], errNotReady, why)
			}
		},
	}
	cmd.Flags().BoolVar(&ready, "ready", false, "wait until the agent is ready (credential valid, hub connected, data path attached if it runs one)")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long to wait before giving up")
	cmd.Flags().StringVar(&project, "project", "", "wait for the hub (or authority) of this project directory instead: its admin socket is there")
	cmd.Flags().StringVar(&hubAdminSocket, "hub-admin", "", "wait for the hub whose admin API is on this unix socket instead")
	return cmd
}

// completeNames completes a command's one NAME argument with what list
// returns from the running agent (nothing, quietly, if none answers).
func completeNames(list func(ctx context.Context) ([]string, error)) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
		defer cancel()
		names, err := list(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

func (e *env) relayNames(ctx context.Context) ([]string, error) {
	rs, err := e.client().Relays(ctx)
	return namesOf(rs, func(r apitype.RelayInfo) string { return r.Name }), err
}

func (e *env) inletNames(ctx context.Context) ([]string, error) {
	ins, err := e.client().Inlets(ctx)
	return namesOf(ins, func(i apitype.InletInfo) string { return i.Name }), err
}

func (e *env) outletNames(ctx context.Context) ([]string, error) {
	os, err := e.client().Outlets(ctx)
	return namesOf(os, func(o apitype.OutletInfo) string { return o.Name }), err
}

func (e *env) workloadNames(ctx context.Context) ([]string, error) {
	ws, err := e.client().Workloads(ctx)
	return namesOf(ws, func(w apitype.WorkloadInfo) string { return w.Name }), err
}

func namesOf[T any](items []T, name func(T) string) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = name(it)
	}
	return out
}
