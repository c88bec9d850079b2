package etcdstore

// A hub's presence and relay claims in the cluster, under one lease:
//
//	grant lease (ClusterOptions.TTL) ──> keep it alive
//	every Interval: hubs/<hub> = its presence (agents, sessions, relays),
//	    claims/<name>/<hub> for each relay name its agents hold, put or
//	    deleted as they change (from the hub's Stats: no hook in its
//	    control path)
//	lease lost (the hub cannot reach a quorum for TTL) ──> its presence
//	    and claims vanish for every other hub; it grants a new lease once
//	    it can and publishes them again
//	stop ──> revoke the lease: they vanish at once
//
// A hub that dies stops keeping its lease alive: its claims vanish within
// TTL. The hub's own agents keep their claims on it meanwhile: with
// outlets connected to every hub (docs/hub-cluster.md), a hub cut off from
// the others still reaches the outlets connected to it, and no other hub
// routes sessions through it.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/hub/admin"
)

// ClusterOptions say who this hub is in the cluster. Zero values mean the
// defaults.
type ClusterOptions struct {
	Name     string        // this hub's name (its member's, or the host's)
	Listen   string        // its agents' address, for the status
	Embedded bool          // an embedded member (false: an external etcd)
	TTL      time.Duration // of the lease (5s)
	Interval time.Duration // between publications (1s)
	// Presence returns the hub's current state (agents, sessions, relays,
	// generation); Name, Listen and Updated are filled in.
	Presence func() admin.HubPresence
	Logger   *zap.Logger
}

// Cluster publishes a hub's presence and claims, and reports the cluster.
type Cluster struct {
	s    *Store
	opts ClusterOptions
	log  *zap.Logger
}

// NewCluster puts the hub on store s into the cluster's view.
func NewCluster(s *Store, opts ClusterOptions) *Cluster {
	if opts.TTL <= 0 {
		opts.TTL = 5 * time.Second
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.Presence == nil {
		opts.Presence = func() admin.HubPresence { return admin.HubPresence{} }
	}
	c := &Cluster{s: s, opts: opts, log: opts.Logger}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	return c
}

func (c *Cluster) hubKey(name string) string { return c.s.prefix + "hubs/" + name }
func (c *Cluster) claimKey(relay, hub string) string {
	return c.s.prefix + "claims/" + relay + "/" + hub
}

// Run publishes until ctx ends, then revokes the lease.
func (c *Cluster) Run(ctx context.Context) {
	for ctx.Err() == nil {
		c.hold(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(c.opts.Interval):
		}
	}
}

// hold grants a lease and publishes under it until the lease is lost or
// ctx ends.
func (c *Cluster) hold(ctx context.Context) {
	gctx, cancel := context.WithTimeout(ctx, c.s.timeout)
	lease, err := c.s.c.Grant(gctx, int64(c.opts.TTL/time.Second))
	cancel()
	if err != nil {
		return // no quorum: again later
	}
	kctx, stopKeep := context.WithCancel(ctx)
	defer stopKeep()
	alive, err := c.s.c.KeepAlive(kctx, lease.ID)
	if err != nil {
		return
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c.s.c.Revoke(rctx, lease.ID)
		cancel()
	}()
	var last admin.HubPresence
	claimed := map[string]bool{}
	t := time.NewTicker(c.opts.Interval)
	defer t.Stop()
	for {
		p := c.opts.Presence()
		p.Name, p.Listen = c.opts.Name, c.opts.Listen
		if err := c.publish(ctx, lease.ID, p, &last, claimed); err != nil {
			c.log.Debug("publishing this hub's presence failed", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case _, ok := <-alive:
			if !ok {
				c.log.Warn("lost this hub's lease in the cluster (no quorum): its relay claims vanished for the other hubs until it is back",
					zap.String("hub", c.opts.Name))
				return
			}
		case <-t.C:
		}
	}
}

// publish writes the presence when it changed (or every 10 intervals) and
// brings the claims in line with the relays held.
func (c *Cluster) publish(ctx context.Context, lease clientv3.LeaseID, p admin.HubPresence, last *admin.HubPresence, claimed map[string]bool) error {
	pctx, cancel := context.WithTimeout(ctx, c.s.timeout)
	defer cancel()
	slices.Sort(p.Relays)
	same := last.Agents == p.Agents && last.Sessions == p.Sessions && slices.Equal(last.Relays, p.Relays) &&
		last.Generation == p.Generation && time.Since(last.Updated) < 10*c.opts.Interval
	if !same {
		p.Updated = time.Now().UTC()
		data, err := json.Marshal(p)
		if err != nil {
			return fmt.Errorf("encode presence: %w", err)
		}
		if _, err := c.s.c.Put(pctx, c.hubKey(c.opts.Name), string(data), clientv3.WithLease(lease)); err != nil {
			return err
		}
		*last = p
	}
	for _, r := range p.Relays {
		if !claimed[r] {
			if _, err := c.s.c.Put(pctx, c.claimKey(r, c.opts.Name), c.opts.Name, clientv3.WithLease(lease)); err != nil {
				return err
			}
			claimed[r] = true
		}
	}
	for r := range claimed {
		if !slices.Contains(p.Relays, r) {
			if _, err := c.s.c.Delete(pctx, c.claimKey(r, c.opts.Name)); err != nil {
				return err
			}
			delete(claimed, r)
		}
	}
	return nil
}

// ClusterStatus reports the cluster as this hub sees it (hub.Cluster).
// What only the majority knows (the generation) fails without quorum, and
// says so; the rest is this member's last view.
func (c *Cluster) ClusterStatus(ctx context.Context) (*admin.ClusterStatus, error) {
	st := &admin.ClusterStatus{Store: "etcd (external)", Hub: c.opts.Name, Claims: map[string][]string{}}
	if c.opts.Embedded {
		st.Store = "etcd (embedded)"
	}
	gen, err := c.s.Generation()
	st.Generation, st.Healthy = gen, err == nil
	if err != nil {
		st.Error = err.Error()
	}
	local := clientv3.WithSerializable()
	resp, err := c.s.c.Get(ctx, c.s.prefix+"hubs/", clientv3.WithPrefix(), local)
	if err != nil {
		return nil, fmt.Errorf("read the cluster's hubs: %w", err)
	}
	live := map[string]bool{}
	for _, kv := range resp.Kvs {
		var p admin.HubPresence
		if json.Unmarshal(kv.Value, &p) == nil {
			st.Hubs = append(st.Hubs, p)
			live[p.Name] = true
		}
	}
	if resp, err = c.s.c.Get(ctx, c.s.prefix+"claims/", clientv3.WithPrefix(), local); err != nil {
		return nil, fmt.Errorf("read the cluster's claims: %w", err)
	}
	for _, kv := range resp.Kvs {
		relay, hub, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), c.s.prefix+"claims/"), "/")
		if ok {
			st.Claims[relay] = append(st.Claims[relay], hub)
		}
	}
	endpoint := ""
	if eps := c.s.c.Endpoints(); len(eps) > 0 {
		endpoint = eps[0]
	}
	var leader uint64
	if ms, err := c.s.c.Status(ctx, endpoint); err == nil {
		leader, st.RaftTerm, st.RaftIndex, st.DBSize = ms.Leader, ms.RaftTerm, ms.RaftIndex, ms.DbSize
	}
	ml, err := c.s.c.MemberList(ctx)
	if err != nil {
		return st, nil // cut off: what it knows
	}
	for _, m := range ml.Members {
		cm := admin.ClusterMember{Name: m.Name, ID: strconv.FormatUint(m.ID, 16), Leader: m.ID == leader, Live: live[m.Name]}
		for _, u := range m.PeerURLs {
			if u != aloneURL.String() { // a member alone has no peer URL
				cm.PeerURLs = append(cm.PeerURLs, u)
			}
		}
		if cm.Leader {
			st.Leader = m.Name
		}
		st.Members = append(st.Members, cm)
	}
	return st, nil
}
