package admin

import (
	"context"
	"time"
)

// ClusterStatus is GET /v1/cluster: where the hub keeps the authority's
// records and, on etcd, the cluster of hubs that share them.
type ClusterStatus struct {
	// Store is "etcd (embedded)", "etcd (external)"; Hub this hub's name
	// in the cluster.
	Store string `json:"store"`
	Hub   string `json:"hub"`
	// Leader is the name of the etcd member that leads ("" if none or
	// unknown: this member is cut off).
	Leader string `json:"leader,omitempty"`
	// Healthy: this hub reads the committed state (it reaches a quorum).
	Healthy bool   `json:"healthy"`
	Error   string `json:"error,omitempty"`
	// Generation, RaftTerm, RaftIndex and DBSize are this member's view.
	Generation uint64          `json:"generation"`
	RaftTerm   uint64          `json:"raft_term,omitempty"`
	RaftIndex  uint64          `json:"raft_index,omitempty"`
	DBSize     int64           `json:"db_size,omitempty"`
	Members    []ClusterMember `json:"members"`
	Hubs       []HubPresence   `json:"hubs"`
	// Claims maps each relay name to the hubs whose agents hold it.
	Claims map[string][]string `json:"claims,omitempty"`
}

// ClusterMember is one etcd member.
type ClusterMember struct {
	Name     string   `json:"name"`
	ID       string   `json:"id"`
	PeerURLs []string `json:"peer_urls,omitempty"`
	Leader   bool     `json:"leader,omitempty"`
	// Live: its hub holds its lease in the cluster (it reaches a quorum).
	Live bool `json:"live"`
}

// HubPresence is what a hub of the cluster publishes about itself, under
// a lease that ends when it dies or loses the quorum.
type HubPresence struct {
	Name       string    `json:"name"`
	Listen     string    `json:"listen,omitempty"`
	Agents     int       `json:"agents"`   // control connections
	Sessions   int       `json:"sessions"` // data sessions waiting for their peer
	Relays     []string  `json:"relays,omitempty"`
	Generation uint64    `json:"generation"` // member-state generation its agents heard
	Updated    time.Time `json:"updated"`
}

// Cluster reports the cluster of hubs (GET /v1/cluster); a hub on its own
// hub.db (--store bolt) answers 404.
func (c *Client) Cluster(ctx context.Context) (*ClusterStatus, error) {
	var out ClusterStatus
	return &out, c.do(ctx, "GET", "/v1/cluster", nil, &out)
}
