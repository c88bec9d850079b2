package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluicehq/sluice/agent/hub/admin"
)

type fakeCluster struct {
	st  *admin.ClusterStatus
	err error
}

func (f fakeCluster) ClusterStatus(context.Context) (*admin.ClusterStatus, error) { return f.st, f.err }

// TestClusterCollector: the cluster's status reaches its metrics (this hub
// leads and is healthy, one member of three is down, each hub's agents),
// and a status that cannot be read is a metric, not a failed scrape; the
// metrics pass promlint.
func TestClusterCollector(t *testing.T) {
	c := NewClusterCollector(fakeCluster{st: &admin.ClusterStatus{Hub: "a", Leader: "a", Healthy: true,
		Members: []admin.ClusterMember{{Name: "a", Live: true}, {Name: "b", Live: true}, {Name: "c"}},
		Hubs:    []admin.HubPresence{{Name: "a", Agents: 3, Sessions: 1}, {Name: "b", Agents: 2}}}})
	want := `
# HELP sluice_hub_cluster_agents Agents connected to each hub of the cluster, as the hub last published it.
# TYPE sluice_hub_cluster_agents gauge
sluice_hub_cluster_agents{hub="a"} 3
sluice_hub_cluster_agents{hub="b"} 2
# HELP sluice_hub_cluster_healthy 1 if this hub reaches a quorum of the project's etcd (it can redeem tickets and issue credentials), 0 if it refuses with no_quorum.
# TYPE sluice_hub_cluster_healthy gauge
sluice_hub_cluster_healthy 1
# HELP sluice_hub_cluster_leader 1 if this hub's etcd member leads the cluster.
# TYPE sluice_hub_cluster_leader gauge
sluice_hub_cluster_leader 1
# HELP sluice_hub_cluster_members etcd members of the cluster, by state: live (its hub holds its lease) or down.
# TYPE sluice_hub_cluster_members gauge
sluice_hub_cluster_members{state="down"} 1
sluice_hub_cluster_members{state="live"} 2
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "sluice_hub_cluster_agents", "sluice_hub_cluster_healthy",
		"sluice_hub_cluster_leader", "sluice_hub_cluster_members"); err != nil {
		t.Error(err)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	failing := NewClusterCollector(fakeCluster{err: errors.New("no member")})
	if got := testutil.ToFloat64(failing); got != 1 {
		t.Errorf("status errors metric with an unreadable status = %v, want 1", got)
	}
}
