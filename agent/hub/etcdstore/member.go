package etcdstore

// The etcd member a hub embeds. Alone (no peers) it listens on nothing:
// the hub reaches it in process (v3client), so one hub is still one
// process with one directory and no port of its own beyond --listen. In a
// cluster it listens for its peers on ListenPeer, with TLS both ways on
// certificates the project authority issues (peertls.go).

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// DataDir is the embedded member's data directory in a project directory.
func DataDir(projectDir string) string { return filepath.Join(projectDir, "hub.etcd") }

// aloneURL is the peer URL a member alone advertises, and never serves.
var aloneURL = url.URL{Scheme: "http", Host: "localhost:0"}

// Peer is one member of a cluster of hubs.
type Peer struct {
	Name string // unique in the cluster, e.g. hub-a
	URL  string // its peer URL, https://10.0.0.1:2380
}

// ParsePeers parses --cluster-peers: name=https://host:port,...
func ParsePeers(s string) ([]Peer, error) {
	var out []Peer
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		name, raw, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || name == "" || raw == "" {
			return nil, fmt.Errorf("parse cluster peer %q: want name=https://host:port", part)
		}
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "https" || u.Port() == "" || u.Path != "" {
			return nil, fmt.Errorf("parse cluster peer %q: want name=https://host:port (peer traffic is always TLS)", part)
		}
		if seen[name] {
			return nil, fmt.Errorf("parse cluster peers: %q named twice", name)
		}
		seen[name] = true
		out = append(out, Peer{Name: name, URL: u.String()})
	}
	return out, nil
}

// MemberOptions say how to run the embedded member. Zero values mean a
// single member named "hub".
type MemberOptions struct {
	Dir  string // data directory (DataDir), required
	Name string // this member's name ("hub"; in a cluster, one of Peers)
	// Peers, if set, are the cluster's members, this one included; this
	// member listens on ListenPeer (default: the host and port of its own
	// URL in Peers) with TLS.
	Peers      []Peer
	ListenPeer string
	// Token keeps clusters apart: members of clusters with other tokens
	// refuse each other (the project's ID).
	Token string
	// PeerTLS is the peer certificate, key and CA files (peertls.go).
	PeerTLS PeerFiles
	Logger  *zap.Logger // zap.NewNop()
}

// Member is a running embedded etcd member.
type Member struct {
	e *embed.Etcd
}

// StartMember starts the embedded member and returns once it is serving:
// alone, at once; in a cluster, once a quorum of Peers formed or took it
// back, which wait says every few seconds (nil: nothing).
func StartMember(opts MemberOptions, wait func(time.Duration)) (*Member, error) {
	if opts.Dir == "" {
		return nil, errors.New("start etcd member: no data directory")
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("start etcd member: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Dir = opts.Dir
	cfg.Name = opts.Name
	if cfg.Name == "" {
		cfg.Name = "hub"
	}
	opts.Name = cfg.Name
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(log.WithOptions(zap.WrapCore(quiet)))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = nil, nil // in process only
	cfg.InitialClusterToken = "sluice-" + opts.Token
	cfg.SnapshotCount = 10000
	cfg.AutoCompactionMode, cfg.AutoCompactionRetention = "revision", "1000"
	if len(opts.Peers) == 0 {
		// No peer listener; the advertised URL (etcd wants one) is never
		// dialed, as there is no other member.
		cfg.ListenPeerUrls = nil
		cfg.AdvertisePeerUrls = []url.URL{aloneURL}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	} else {
		if err := clusterConfig(cfg, opts); err != nil {
			return nil, err
		}
	}
	if fileutilExists(filepath.Join(opts.Dir, "member")) {
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start etcd member in %s: %w", opts.Dir, err)
	}
	start := time.Now()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-e.Server.ReadyNotify():
			return &Member{e: e}, nil
		case err := <-e.Err():
			e.Close()
			return nil, fmt.Errorf("start etcd member in %s: %w", opts.Dir, err)
		case <-t.C:
			if wait != nil {
				wait(time.Since(start))
			}
		}
	}
}

// clusterConfig sets the peer URLs, the initial cluster and peer TLS.
func clusterConfig(cfg *embed.Config, opts MemberOptions) error {
	var self *Peer
	var initial []string
	for i, p := range opts.Peers {
		if p.Name == cfg.Name {
			self = &opts.Peers[i]
		}
		initial = append(initial, p.Name+"="+p.URL)
	}
	if self == nil {
		return fmt.Errorf("start etcd member: --cluster-name %q is not one of --cluster-peers", cfg.Name)
	}
	adv, err := url.Parse(self.URL)
	if err != nil {
		return fmt.Errorf("start etcd member: %w", err)
	}
	listen := *adv
	if opts.ListenPeer != "" {
		listen.Host = opts.ListenPeer
	}
	if net.ParseIP(listen.Hostname()) == nil {
		return fmt.Errorf("start etcd member: its peer URL %s names a host, and etcd listens only on an IP address: add --cluster-listen IP:PORT (0.0.0.0:%s for every address)", self.URL, adv.Port())
	}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{listen}, []url.URL{*adv}
	cfg.InitialCluster = strings.Join(initial, ",")
	if opts.PeerTLS.Cert == "" {
		return errors.New("start etcd member: a cluster needs peer TLS files")
	}
	cfg.PeerTLSInfo.CertFile = opts.PeerTLS.Cert
	cfg.PeerTLSInfo.KeyFile = opts.PeerTLS.Key
	cfg.PeerTLSInfo.TrustedCAFile = opts.PeerTLS.CA
	cfg.PeerTLSInfo.ClientCertAuth = true
	// The project's CA signs agents' credentials too: only a certificate
	// with the peer name (peertls.go) is a peer.
	cfg.PeerTLSInfo.AllowedCNs = []string{PeerCommonName(opts.Token)}
	return nil
}

func fileutilExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Client is a client of this member, in process.
func (m *Member) Client() *clientv3.Client { return v3client.New(m.e.Server) }

// Close stops the member.
func (m *Member) Close() error {
	m.e.Close()
	return nil
}

// Stopped is closed when the member stopped on its own (its error on Err).
func (m *Member) Err() <-chan error { return m.e.Err() }

// ID is this member's ID in the cluster; Leader the leader's (0: none).
func (m *Member) ID() uint64     { return uint64(m.e.Server.MemberID()) }
func (m *Member) Leader() uint64 { return uint64(m.e.Server.Leader()) }

// noise are etcd's warnings that say nothing about a hub's member: it
// serves no client port and no auth tokens, and at a stop a cluster
// version update is cancelled.
var noise = map[string]bool{
	"Running http and grpc server on single port. This is not recommended for production.": true,
	"simple token is not cryptographically signed":                                         true,
	"failed to update cluster version":                                                     true,
}

// quiet drops etcd's noise from its logger.
func quiet(c zapcore.Core) zapcore.Core { return quietCore{c} }

type quietCore struct{ zapcore.Core }

func (q quietCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if noise[e.Message] {
		return ce
	}
	return q.Core.Check(e, ce)
}

func (q quietCore) With(f []zapcore.Field) zapcore.Core { return quietCore{q.Core.With(f)} }
