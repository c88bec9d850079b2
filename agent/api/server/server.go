// Package server is the agent's side of its local HTTP API: the handler
// that serves a Backend (*daemon.Agent) on the unix socket api.Listen
// opens. Package api is the client; package api/apitype has the requests
// and answers as clients see them.
//
//	GET    /v1/status              apitype.Status
//	GET    /v1/relays              POST /v1/relays       apitype.RelayRequest
//	DELETE /v1/relays/{name}
//	GET    /v1/tcp-inlets          POST /v1/tcp-inlets   apitype.InletSpec
//	DELETE /v1/tcp-inlets/{name}
//	GET    /v1/tcp-outlets         POST /v1/tcp-outlets  apitype.OutletSpec
//	DELETE /v1/tcp-outlets/{name}
//	GET    /v1/workloads           POST /v1/workloads    apitype.Workload
//	DELETE /v1/workloads/{name}
//	GET    /v1/datapath            apitype.DatapathStatus
//	GET    /v1/observe             apitype.FlowEvent lines (observe.go)
//	GET    /v1/capture?kind=&portal=&peer=  apitype.CaptureRecord lines (capture.go)
//	GET    /v1/version             apitype.Version
//
// The handler encodes the daemon's own types (daemon.Status,
// portal.InletInfo, ...); apitype's have the same JSON, and
// TestWireTypesMatch keeps it so.
//
// Errors are {"error": "..."} (apitype.ErrorBody) with 400 (bad input),
// 404, 409 (exists, or a transparent inlet asked of an agent without the
// BPF data path), 502 (the hub refused) or 500.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/sluicehq/sluice/agent/api/apitype"
	"github.com/sluicehq/sluice/agent/buildinfo"
	"github.com/sluicehq/sluice/agent/daemon"
	"github.com/sluicehq/sluice/agent/portal"
	"github.com/sluicehq/sluice/agent/relay"
)

// Backend is what the API serves; *daemon.Agent implements it.
type Backend interface {
	Status() daemon.Status
	Relays() []daemon.RelayInfo
	CreateRelay(ctx context.Context, name string) error
	DeleteRelay(ctx context.Context, name string) error
	Inlets() []daemon.InletInfo
	CreateInlet(spec portal.InletSpec) (portal.InletInfo, error)
	DeleteInlet(name string) error
	Outlets() []daemon.OutletInfo
	CreateOutlet(spec portal.OutletSpec) (portal.OutletInfo, error)
	DeleteOutlet(name string) error
	Workloads() []daemon.WorkloadInfo
	CreateWorkload(w daemon.Workload) (daemon.WorkloadInfo, error)
	DeleteWorkload(name string) error
	Datapath() daemon.DatapathStatus
}

// Handler returns the API's HTTP handler.
func Handler(b Backend) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { reply(w, b.Status(), nil) })
	mux.HandleFunc("GET /v1/relays", func(w http.ResponseWriter, r *http.Request) { reply(w, b.Relays(), nil) })
	mux.HandleFunc("POST /v1/relays", func(w http.ResponseWriter, r *http.Request) {
		var req apitype.RelayRequest
		if decode(w, r, &req) {
			reply(w, daemon.RelayInfo{Name: req.Name, Claimed: true}, b.CreateRelay(r.Context(), req.Name))
		}
	})
	mux.HandleFunc("DELETE /v1/relays/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, b.DeleteRelay(r.Context(), r.PathValue("name")))
	})
	mux.HandleFunc("GET /v1/tcp-inlets", func(w http.ResponseWriter, r *http.Request) { reply(w, b.Inlets(), nil) })
	mux.HandleFunc("POST /v1/tcp-inlets", func(w http.ResponseWriter, r *http.Request) {
		var spec portal.InletSpec
		if decode(w, r, &spec) {
			info, err := b.CreateInlet(spec)
			reply(w, info, err)
		}
	})
	mux.HandleFunc("DELETE /v1/tcp-inlets/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, b.DeleteInlet(r.PathValue("name")))
	})
	mux.HandleFunc("GET /v1/tcp-outlets", func(w http.ResponseWriter, r *http.Request) { reply(w, b.Outlets(), nil) })
	mux.HandleFunc("POST /v1/tcp-outlets", func(w http.ResponseWriter, r *http.Request) {
		var spec portal.OutletSpec
		if decode(w, r, &spec) {
			info, err := b.CreateOutlet(spec)
			reply(w, info, err)
		}
	})
	mux.HandleFunc("DELETE /v1/tcp-outlets/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, b.DeleteOutlet(r.PathValue("name")))
	})
	mux.HandleFunc("GET /v1/workloads", func(w http.ResponseWriter, r *http.Request) { reply(w, b.Workloads(), nil) })
	mux.HandleFunc("POST /v1/workloads", func(w http.ResponseWriter, r *http.Request) {
		var wl daemon.Workload
		if decode(w, r, &wl) {
			info, err := b.CreateWorkload(wl)
			reply(w, info, err)
		}
	})
	mux.HandleFunc("DELETE /v1/workloads/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, b.DeleteWorkload(r.PathValue("name")))
	})
	mux.HandleFunc("GET /v1/datapath", func(w http.ResponseWriter, r *http.Request) { reply(w, b.Datapath(), nil) })
	observeRoute(mux, b)
	if c, ok := b.(Capturer); ok {
		mux.HandleFunc("GET /v1/capture", handleCapture(c.Taps()))
	}
	mux.HandleFunc("GET /v1/version", func(w http.ResponseWriter, r *http.Request) { reply(w, buildinfo.Get(), nil) })
	return mux
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// One JSON value, nothing after it but white space.
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("the body holds more than one JSON value")
		}
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apitype.ErrorBody{Error: fmt.Sprintf("decode request: %v", err)})
		return false
	}
	return true
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		writeJSON(w, statusOf(err), apitype.ErrorBody{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func statusOf(err error) int {
	var hubErr *relay.HubError
	switch {
	case errors.Is(err, portal.ErrInvalid), errors.Is(err, daemon.ErrInvalidWorkload), errors.Is(err, daemon.ErrInvalidRelayName):
		return http.StatusBadRequest
	case errors.Is(err, portal.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, portal.ErrExists), errors.Is(err, daemon.ErrNoDatapath):
		return http.StatusConflict
	case errors.As(err, &hubErr), errors.Is(err, relay.ErrNotConnected):
		return http.StatusBadGateway
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
