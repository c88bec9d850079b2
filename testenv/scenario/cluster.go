package scenario

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sluicehq/sluice/testenv"
)

// A cluster of hubs (Options.HubCluster, docs/hub-cluster.md): n hubs,
// each on a host of its own on the internet side (testenv.SeedHubHostAddr),
// sharing the project's records in their embedded etcd members. The
// tickets list every hub, the first first: the agents enroll there, and
// the scenario's Hub is that hub's process.

// clusterPeerPort is the etcd peer port of each hub.
const clusterPeerPort = "2380"

// hubAddrs are the hubs' agent addresses: one hub, or the cluster's.
func (s *Scenario) hubAddrs() []string {
	if s.opts.HubCluster < 2 {
		return []string{s.Seed.HubAddr + ":" + HubPort}
	}
	var out []string
	for i := range s.opts.HubCluster {
		out = append(out, testenv.SeedHubHostAddr(i)+":"+HubPort)
	}
	return out
}

// clusterName is hub i's member name.
func clusterName(i int) string { return string(rune('a' + i)) }

// startCluster starts the cluster's hubs, each from a copy of the
// project's files (only the first has hub.db: it is migrated into etcd
// once), and waits until every one listens.
func (s *Scenario) startCluster(ctx context.Context) error {
	if s.opts.SplitAuthority {
		return errors.New("start hub cluster: the authority cannot run apart from a cluster's hubs here")
	}
	addrs := s.hubAddrs()
	var peers []string
	for i := range addrs {
		peers = append(peers, clusterName(i)+"=https://"+testenv.SeedHubHostAddr(i)+":"+clusterPeerPort)
	}
	s.step(fmt.Sprintf("administrator: %d hubs in one etcd cluster on %s", len(addrs), strings.Join(addrs, ", ")))
	for i, addr := range addrs {
		host, err := s.Seed.AddHubHost(clusterName(i), testenv.SeedHubHostAddr(i))
		if err != nil {
			return err
		}
		dir := s.ProjectDir
		if i > 0 {
			dir = filepath.Join(s.Env.Dir(), "project-"+clusterName(i))
			if err := copyProject(s.ProjectDir, dir); err != nil {
				return err
			}
		}
		args := []string{filepath.Join(s.opts.Bin, "agent"), "hub", "--project", dir, "--listen", addr,
			"--cluster-name", clusterName(i), "--cluster-peers", strings.Join(peers, ",")}
		args = append(append(args, s.opts.HubArgs...), s.metricsArgs()...)
		if s.opts.CredentialLifetime > 0 {
			args = append(args, "--credential-lifetime", s.opts.CredentialLifetime.String())
		}
		p, err := host.Start("hub-"+clusterName(i), args, testenv.ProcOptions{})
		if err != nil {
			return err
		}
		s.Hubs = append(s.Hubs, p)
	}
	s.Hub = s.Hubs[0]
	for _, p := range s.Hubs {
		if err := waitFor(ctx, p, "hub listening"); err != nil {
			return err
		}
	}
	return nil
}

// copyProject copies the files every hub of the project needs.
func copyProject(from, to string) error {
	if err := os.MkdirAll(to, 0o700); err != nil {
		return fmt.Errorf("copy project: %w", err)
	}
	for _, f := range []string{"project.json", "authority.key", "authority.pem", "hub.key", "hub.pem"} {
		data, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			return fmt.Errorf("copy project: %w", err)
		}
		if err := os.WriteFile(filepath.Join(to, f), data, 0o600); err != nil {
			return fmt.Errorf("copy project: %w", err)
		}
	}
	return nil
}
