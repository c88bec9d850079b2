package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/agent/hub/admin"
)

// Cluster reports the cluster of hubs (hub.Cluster: etcdstore's).
type Cluster interface {
	ClusterStatus(ctx context.Context) (*admin.ClusterStatus, error)
}

var (
	clusterHealthy = desc("hub_cluster_healthy",
		"1 if this hub reaches a quorum of the project's etcd (it can redeem tickets and issue credentials), 0 if it refuses with no_quorum.")
	clusterLeader = desc("hub_cluster_leader",
		"1 if this hub's etcd member leads the cluster.")
	clusterMembers = desc("hub_cluster_members",
		"etcd members of the cluster, by state: live (its hub holds its lease) or down.", "state")
	clusterAgents = desc("hub_cluster_agents",
		"Agents connected to each hub of the cluster, as the hub last published it.", "hub")
	clusterSessions = desc("hub_cluster_pending_sessions",
		"Data sessions waiting for their peer at each hub of the cluster, as the hub last published it.", "hub")
	clusterScrapeFail = desc("hub_cluster_status_errors",
		"1 if this scrape could not read the cluster's status at all.")
)

// clusterScrapeTimeout bounds the status read of one scrape.
const clusterScrapeTimeout = 3 * time.Second

// ClusterCollector reads the cluster's status at each scrape.
type ClusterCollector struct{ c Cluster }

// NewClusterCollector returns the collector of the cluster's metrics.
func NewClusterCollector(c Cluster) *ClusterCollector { return &ClusterCollector{c: c} }

// Describe sends every metric's description.
func (c *ClusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{clusterHealthy, clusterLeader, clusterMembers, clusterAgents, clusterSessions, clusterScrapeFail} {
		ch <- d
	}
}

// Collect reads the cluster's status and sends its metrics.
func (c *ClusterCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), clusterScrapeTimeout)
	defer cancel()
	st, err := c.c.ClusterStatus(ctx)
	gauge(ch, clusterScrapeFail, boolValue(err != nil))
	if err != nil {
		return
	}
	gauge(ch, clusterHealthy, boolValue(st.Healthy))
	gauge(ch, clusterLeader, boolValue(st.Leader != "" && st.Leader == st.Hub))
	live := 0
	for _, m := range st.Members {
		if m.Live {
			live++
		}
	}
	gauge(ch, clusterMembers, float64(live), "live")
	gauge(ch, clusterMembers, float64(len(st.Members)-live), "down")
	for _, h := range st.Hubs {
		gauge(ch, clusterAgents, float64(h.Agents), h.Name)
		gauge(ch, clusterSessions, float64(h.Sessions), h.Name)
	}
}
