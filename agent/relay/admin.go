package relay

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/authority"
)

// AdminHandler serves the hub's administration API, meant for a unix
// socket on the hub's machine (only whoever may open it may revoke):
//
//	GET  /v1/members
//	POST /v1/members/{node}/revoke
//	PUT  /v1/members/{node}/attributes   {"attributes": {"k": "v"}}
//	GET  /v1/stats                       Stats: sessions, limits, refusals
//	GET  /v1/backup                      a consistent copy of the database (hub.db)
//
// Errors are {"error": "..."} with 400, 404 (no such member), 409 (revoked)
// or 500.
func (h *Hub) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, r *http.Request) {
		ms, err := h.Members()
		adminReply(w, ms, err)
	})
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) {
		adminReply(w, h.Stats(), nil)
	})
	mux.HandleFunc("GET /v1/backup", h.serveBackup)
	mux.HandleFunc("POST /v1/members/{node}/revoke", func(w http.ResponseWriter, r *http.Request) {
		m, err := h.Revoke(r.PathValue("node"))
		adminReply(w, m, err)
	})
	mux.HandleFunc("PUT /v1/members/{node}/attributes", func(w http.ResponseWriter, r *http.Request) {
		var req AttributesRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			adminReply(w, nil, fmt.Errorf("decode request: %v: %w", err, errBadRequest))
			return
		}
		m, err := h.SetAttributes(r.PathValue("node"), req.Attributes)
		adminReply(w, m, err)
	})
	return mux
}

// serveBackup streams a consistent copy of the authority's database, taken
// in one read transaction while the hub goes on serving. A copy cut short
// arrives short of its Content-Length, which the client reports.
func (h *Hub) serveBackup(w http.ResponseWriter, r *http.Request) {
	started := false
	_, err := h.auth.Backup(func(size int64) io.Writer {
		started = true
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		return w
	})
	if err != nil && !started {
		adminReply(w, nil, err)
	}
	if err != nil {
		h.log.Error("backup of the hub database failed", zap.Error(err))
	}
}

// AttributesRequest replaces a member's attributes.
type AttributesRequest struct {
	Attributes map[string]string `json:"attributes"`
}

var errBadRequest = errors.New("bad request")

func adminReply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	code := http.StatusOK
	if err != nil {
		switch {
		case errors.Is(err, authority.ErrNotMember):
			code = http.StatusNotFound
		case errors.Is(err, authority.ErrMemberRevoked):
			code = http.StatusConflict
		case errors.Is(err, errBadRequest), errors.Is(err, authority.ErrBadAttribute):
			code = http.StatusBadRequest
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
