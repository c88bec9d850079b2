// Package api is the agent's local HTTP API, served on a unix socket, and the
// one client that agentctl uses to talk to it.
//
//	GET    /v1/status
//	GET    /v1/relays              POST /v1/relays       {"name": ...}
//	DELETE /v1/relays/{name}
//	GET    /v1/tcp-inlets          POST /v1/tcp-inlets   portal.InletSpec
//	DELETE /v1/tcp-inlets/{name}
//	GET    /v1/tcp-outlets         POST /v1/tcp-outlets  portal.OutletSpec
//	DELETE /v1/tcp-outlets/{name}
//	GET    /v1/workloads           POST /v1/workloads    daemon.Workload
//	DELETE /v1/workloads/{name}
//	GET    /v1/datapath
//
// Errors are {"error": "..."} with 400 (bad input), 404, 409 (exists, or a
// transparent inlet asked of an agent without the BPF data path),
// 502 (the hub refused) or 500.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

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

// RelayRequest creates a relay.
type RelayRequest struct {
	Name string `json:"name"`
}

// ErrorBody is the body of every error response.
type ErrorBody struct {
	Error string `json:"error"`
}

// Handler returns the API's HTTP handler.
func Handler(b Backend) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { reply(w, b.Status(), nil) })
	mux.HandleFunc("GET /v1/relays", func(w http.ResponseWriter, r *http.Request) { reply(w, b.Relays(), nil) })
	mux.HandleFunc("POST /v1/relays", func(w http.ResponseWriter, r *http.Request) {
		var req RelayRequest
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
		writeJSON(w, http.StatusBadRequest, ErrorBody{Error: fmt.Sprintf("decode request: %v", err)})
		return false
	}
	return true
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		writeJSON(w, statusOf(err), ErrorBody{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func statusOf(err error) int {
	var hubErr *relay.HubError
	switch {
	case errors.Is(err, portal.ErrInvalid):
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

// Listen opens the unix socket at path, mode 0600, replacing a stale socket
// left by a dead agent but refusing to steal a live one's. Nobody else can
// connect to it at any moment, whatever the umask and however open path's
// directory is: the socket is bound in a fresh directory of its own (0700),
// made 0600 there, and only then renamed into place. Path's directory is
// made 0700 if it does not exist. Closing the listener removes the socket.
func Listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("listen on %s: another agent is serving this socket; pass another --api", path)
	}
	private, err := os.MkdirTemp(dir, "."+filepath.Base(path)+".")
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	defer os.RemoveAll(private)
	// MkdirTemp's 0700 went through the umask, which may have taken the
	// owner's bits too.
	if err := os.Chmod(private, 0o700); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	bound := filepath.Join(private, "socket")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: bound, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // it will not be at bound
	err = os.Chmod(bound, 0o600)
	if err == nil {
		err = os.Rename(bound, path) // replaces a stale socket atomically
	}
	var st os.FileInfo
	if err == nil {
		st, err = os.Lstat(path)
	}
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return &listener{UnixListener: ln, path: path, file: st}, nil
}

// listener is a unix listener renamed into place after its bind.
type listener struct {
	*net.UnixListener
	path string
	file os.FileInfo // the socket file as Listen left it
	once sync.Once
}

// Addr returns the socket's address, where it was renamed to.
func (l *listener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

// Close stops listening and removes the socket file, unless it has been
// replaced since.
func (l *listener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if st, serr := os.Lstat(l.path); serr == nil && os.SameFile(st, l.file) {
			os.Remove(l.path)
		}
	})
	return err
}
