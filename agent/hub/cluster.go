package hub

import (
	"context"
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

// withCluster adds GET /v1/cluster to an admin handler.
func withCluster(c Cluster, next http.Handler) http.Handler {
	if c == nil {
		return next
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/cluster", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), clusterTimeout)
		defer cancel()
		st, err := c.ClusterStatus(ctx)
		adminReply(w, st, err)
	})
	mux.Handle("/", next)
	return mux
}
