package hub

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/agent/hub/admin"
)

// Cluster is the hub's view of the cluster of hubs that share the
// authority's records (agent/hub/etcdstore): the admin API reports it as
// GET /v1/cluster. The hub needs nothing else of it: member changes made
// on other hubs reach it through the authority (authority.Service.Follow),
// and its relay claims are published from its Stats.
type Cluster interface {
	ClusterStatus(ctx context.Context) (*admin.ClusterStatus, error)
}

// clusterTimeout bounds one GET /v1/cluster.
const clusterTimeout = 5 * time.Second

// withCluster adds GET /v1/cluster to an admin handler; without a cluster
// it answers 404 and says why.
func withCluster(c Cluster, next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/cluster", func(w http.ResponseWriter, r *http.Request) {
		if c == nil {
			adminReply(w, nil, fmt.Errorf("cluster status: this hub keeps its records in hub.db alone (agent hub --store bolt), or runs as a relay only: %w", errNoRequest))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), clusterTimeout)
		defer cancel()
		st, err := c.ClusterStatus(ctx)
		adminReply(w, st, err)
	})
	mux.Handle("/", next)
	return mux
}
