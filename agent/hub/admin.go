package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/hub/admin"
	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/wire"
)

// MemberAdmin is what the admin API changes: the authority, in the hub's
// process (*Hub) or on its own (*authority.Service).
type MemberAdmin interface {
	Members() ([]authority.Member, error)
	Revoke(nodeID string) (*authority.Member, error)
	SetAttributes(nodeID string, attrs map[string]string) (*authority.Member, error)
}

// AdminHandler serves the hub's administration API, meant for a unix
// socket on the hub's machine (only whoever may open it may revoke). A hub
// that runs as a relay only answers the member requests with 409: they
// belong to the authority's own socket (AuthorityAdminHandler).
func (h *Hub) AdminHandler() http.Handler {
	var db *authority.Authority
	if h.local != nil {
		db = h.local.Authority()
	}
	return withCluster(h.opts.Cluster, adminHandler(h, h.Stats, db, h.log))
}

// AuthorityAdminHandler serves the member requests of the admin API for an
// authority that runs apart from the relay (agent authority).
func AuthorityAdminHandler(s *authority.Service, log *zap.Logger) http.Handler {
	return adminHandler(s, nil, s.Authority(), log)
}

// adminHandler serves:
//
//	GET  /v1/members
//	POST /v1/members/{node}/revoke
//	PUT  /v1/members/{node}/attributes   {"attributes": {"k": "v"}}
//	GET  /v1/stats                       Stats: sessions, limits, refusals (a relay's)
//	GET  /v1/backup                      a consistent copy of the database (hub.db; the authority's)
//	GET  /v1/cluster                     the cluster of hubs (a hub on etcd; cluster.go)
//
// Errors are {"error": "..."} with 400, 404 (no such member, no stats here,
// or no such request), 409 (revoked, or a relay without the authority), 503
// (no quorum: the hub cannot commit to its cluster's store) or 500.
func adminHandler(members MemberAdmin, stats func() Stats, db *authority.Authority, log *zap.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, r *http.Request) {
		ms, err := members.Members()
		adminReply(w, ms, err)
	})
	if stats != nil {
		mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) {
			adminReply(w, stats(), nil)
		})
	}
	if db != nil {
		mux.HandleFunc("GET /v1/backup", serveBackup(db, log))
	}
	mux.HandleFunc("POST /v1/members/{node}/revoke", func(w http.ResponseWriter, r *http.Request) {
		m, err := members.Revoke(r.PathValue("node"))
		adminReply(w, m, err)
	})
	mux.HandleFunc("PUT /v1/members/{node}/attributes", func(w http.ResponseWriter, r *http.Request) {
		var req admin.AttributesRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			adminReply(w, nil, fmt.Errorf("decode request: %w: %w", err, errBadRequest))
			return
		}
		m, err := members.SetAttributes(r.PathValue("node"), req.Attributes)
		adminReply(w, m, err)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		adminReply(w, nil, fmt.Errorf("no admin request %s %s: %w", r.Method, r.URL.Path, errNoRequest))
	})
	return mux
}

// serveBackup streams a consistent copy of the authority's database, taken
// in one read transaction while the hub goes on serving. A copy cut short
// arrives short of its Content-Length, which the client reports.
func serveBackup(db *authority.Authority, log *zap.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		backup(db, log, w)
	}
}

func backup(db *authority.Authority, log *zap.Logger, w http.ResponseWriter) {
	started := false
	_, err := db.Backup(func(size int64) io.Writer {
		started = true
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		return w
	})
	if err != nil && !started {
		adminReply(w, nil, err)
	}
	if err != nil {
		log.Error("backup of the hub database failed", zap.Error(err))
	}
}

var (
	errBadRequest = errors.New("bad request")
	errNoRequest  = errors.New("no such request")
)

func adminReply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	code := http.StatusOK
	if err != nil {
		switch {
		case errors.Is(err, wire.ErrNotMember), errors.Is(err, errNoRequest):
			code = http.StatusNotFound
		case errors.Is(err, wire.ErrMemberRevoked), errors.Is(err, ErrNotLocal):
			code = http.StatusConflict
		case errors.Is(err, errBadRequest), errors.Is(err, authority.ErrBadAttribute):
			code = http.StatusBadRequest
		case errors.Is(err, wire.ErrNoQuorum): // a hub cut off from its cluster
			code = http.StatusServiceUnavailable
		default:
			code = http.StatusInternalServerError
		}
		v = struct {
			Error string `json:"error"`
		}{err.Error()}
	}
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
