package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/hub"
	hubadmin "github.com/sluicehq/sluice/agent/hub/admin"
	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/hub/etcdstore"
	"github.com/sluicehq/sluice/cmd/internal/cli"
)

// storeFlags say where `agent hub` keeps the authority's records
// (docs/hub-cluster.md).
type storeFlags struct {
	store                     string // etcd or bolt
	clusterName, clusterPeers string
	clusterListen             string
	endpoints                 string
	etcdCA, etcdCert, etcdKey string
	peers                     []etcdstore.Peer
}

func (f *storeFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.store, "store", "etcd", "where the authority keeps members, used tickets and revocations: etcd (an embedded etcd member in DIR/hub.etcd, or the cluster's; an existing hub.db is migrated into it once) or bolt (hub.db alone, as before: one hub only)")
	fs.StringVar(&f.clusterName, "cluster-name", "", "this hub's name in the cluster, one of --cluster-peers")
	fs.StringVar(&f.clusterPeers, "cluster-peers", "", "the cluster's hubs, this one included: name=https://host:port,... (their etcd members' peer URLs; TLS on certificates the project authority issues)")
	fs.StringVar(&f.clusterListen, "cluster-listen", "", "address this hub's etcd member listens on for its peers (default: the host and port of its own --cluster-peers URL)")
	fs.StringVar(&f.endpoints, "etcd-endpoints", "", "an external etcd the hubs share instead of embedded members: https://host:2379,...")
	fs.StringVar(&f.etcdCA, "etcd-ca", "", "CA file of the external etcd's certificates")
	fs.StringVar(&f.etcdCert, "etcd-cert", "", "client certificate file for the external etcd")
	fs.StringVar(&f.etcdKey, "etcd-key", "", "client key file for the external etcd")
}

// check validates the flags' combination.
func (f *storeFlags) check(role string) error {
	clustered := f.clusterName != "" || f.clusterPeers != "" || f.clusterListen != ""
	switch {
	case f.store != "etcd" && f.store != "bolt":
		return cli.Usagef("--store %q: want etcd or bolt", f.store)
	case f.store == "bolt" && (clustered || f.endpoints != ""):
		return cli.Usagef("--store bolt is one hub alone; a cluster (--cluster-*, --etcd-endpoints) keeps its records in etcd")
	case role != "both" && (clustered || f.endpoints != "" || f.store != "etcd"):
		return cli.Usagef("--store, --cluster-* and --etcd-* are for a hub that runs the authority (--role both)")
	case clustered && f.endpoints != "":
		return cli.Usagef("--etcd-endpoints (an external etcd) and --cluster-* (embedded members) exclude each other")
	case clustered && (f.clusterName == "" || f.clusterPeers == ""):
		return cli.Usagef("a cluster needs --cluster-name and --cluster-peers, e.g. --cluster-name a --cluster-peers a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,c=https://10.0.0.3:2380")
	case f.endpoints == "" && (f.etcdCA != "" || f.etcdCert != "" || f.etcdKey != ""):
		return cli.Usagef("--etcd-ca, --etcd-cert and --etcd-key go with --etcd-endpoints")
	case (f.etcdCert == "") != (f.etcdKey == ""):
		return cli.Usagef("--etcd-cert and --etcd-key go together")
	}
	if clustered {
		peers, err := etcdstore.ParsePeers(f.clusterPeers)
		if err != nil {
			return cli.Usagef("--cluster-peers: %v", err)
		}
		f.peers = peers
		if !slices.ContainsFunc(peers, func(p etcdstore.Peer) bool { return p.Name == f.clusterName }) {
			return cli.Usagef("--cluster-name %q is not one of --cluster-peers", f.clusterName)
		}
	}
	return nil
}

// open opens the authority on the store the flags say: hub.db is checked
// (in a child, as before) wherever it is still to be read.
func (f *storeFlags) open(ctx context.Context, p *authority.Project, opts authority.Options, log *zap.Logger) (*authority.Authority, *etcdstore.Store, error) {
	if _, err := os.Stat(authority.DatabasePath(p.Dir)); f.store == "bolt" || err == nil {
		if err := checkInChild(ctx, p.Dir, ""); err != nil {
			return nil, nil, err
		}
	}
	if f.store == "bolt" {
		a, err := authority.Open(p, opts)
		return a, nil, err
	}
	oo := etcdstore.OpenOptions{Project: p, Logger: log.Named("store")}
	if f.endpoints != "" {
		oo.External = &etcdstore.External{Endpoints: strings.Split(f.endpoints, ","), CA: f.etcdCA, Cert: f.etcdCert, KeyFile: f.etcdKey}
	}
	if len(f.peers) > 0 {
		var self string
		for _, pe := range f.peers {
			if pe.Name == f.clusterName {
				self = pe.URL
			}
		}
		if self == "" {
			return nil, nil, cli.Usagef("--cluster-name %q is not one of --cluster-peers", f.clusterName)
		}
		files, err := etcdstore.IssuePeerFiles(filepath.Join(etcdstore.DataDir(p.Dir), "peer-tls"), p.ID, p.Cert, p.Key, self, f.clusterListen)
		if err != nil {
			return nil, nil, err
		}
		oo.Member = etcdstore.MemberOptions{Name: f.clusterName, Peers: f.peers, ListenPeer: f.clusterListen, PeerTLS: files,
			Logger: log.Named("etcd").WithOptions(zap.IncreaseLevel(zap.WarnLevel))}
	} else {
		oo.Member.Logger = log.Named("etcd").WithOptions(zap.IncreaseLevel(zap.WarnLevel))
	}
	st, err := etcdstore.Open(ctx, oo)
	if err != nil {
		return nil, nil, err
	}
	opts.Store = st
	a, err := authority.Open(p, opts)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return a, st, nil
}

// cluster is the hub's place in the cluster (its Run publishes the hub's
// presence and claims; it reports the cluster); nil without a store on
// etcd.
func (f *storeFlags) cluster(st *etcdstore.Store, srv func() *hub.Hub, listen string, log *zap.Logger) *etcdstore.Cluster {
	if st == nil {
		return nil
	}
	name := f.clusterName
	if name == "" {
		name = "hub"
		if f.endpoints != "" {
			name, _ = os.Hostname()
		}
	}
	c := etcdstore.NewCluster(st, etcdstore.ClusterOptions{Name: name, Listen: listen, Embedded: f.endpoints == "", Logger: log.Named("cluster"),
		Presence: func() hubadmin.HubPresence {
			s := srv().Stats()
			return hubadmin.HubPresence{Agents: s.Sessions, Sessions: s.Pending, Relays: s.Relays, Generation: s.MemberGeneration}
		}})
	return c
}

// follow runs the service's watch of a shared store until ctx ends.
func follow(ctx context.Context, svc *authority.Service, log *zap.Logger) {
	svc.OnFollowError(func(node string, err error) {
		log.Warn("passed a member change on without a fresh credential (the node renews)", zap.String("node", node), zap.Error(err))
	})
	go func() {
		for {
			err := svc.Follow(ctx)
			if err == nil {
				return // ctx ended, or not a shared store
			}
			log.Error("watching the shared member state failed; watching again", zap.Error(err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
}

// asideEtcd moves the embedded member's data aside after a restore, so
// that the next start migrates the restored hub.db into a fresh member.
func asideEtcd(projectDir string) (kept string, err error) {
	dir := etcdstore.DataDir(projectDir)
	if _, err := os.Stat(filepath.Join(dir, "member")); errors.Is(err, os.ErrNotExist) {
		return "", nil // no member's data
	}
	kept = dir + ".bak-" + time.Now().UTC().Format("20060102T150405Z")
	if err := os.Rename(dir, kept); err != nil {
		return "", fmt.Errorf("restore: move the etcd data aside: %w", err)
	}
	return kept, nil
}

// hubCertFor gives a hub of a cluster a certificate for its own address
// (the --listen host, or else its --cluster-peers host) when the project's
// hub.pem names another one: every hub of a cluster holds the project's
// key, and agents that fail over check each hub's name.
func (f *storeFlags) hubCertFor(p *authority.Project, listen string, log *zap.Logger) error {
	if f.clusterName == "" && f.endpoints == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", listen, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = ""
		for _, pe := range f.peers {
			if u, err := url.Parse(pe.URL); err == nil && pe.Name == f.clusterName {
				host = u.Hostname()
			}
		}
	}
	if host == "" || p.HubCert.VerifyHostname(host) == nil {
		return nil
	}
	der, err := credential.IssueServer(p.Cert, p.Key, p.HubKey.Public(), host, 365*24*time.Hour)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("issue hub certificate: %w", err)
	}
	p.HubCert = cert
	log.Info("issued this hub's certificate for its own address (the project's hub.pem names another hub)", zap.String("host", host))
	return nil
}
