package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/agent/api"
	"github.com/sluicehq/sluice/agent/api/apitype"
	"github.com/sluicehq/sluice/agent/daemon"
	"github.com/sluicehq/sluice/agent/portal"
	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/maps"
)

// fakeBackend records calls and fails with err when set.
type fakeBackend struct {
	err       error
	inlets    []portal.InletSpec
	workloads []daemon.WorkloadInfo
	deleted   []string
}

func (f *fakeBackend) Status() daemon.Status { return daemon.Status{Node: "n1", Project: "p1"} }
func (f *fakeBackend) Relays() []daemon.RelayInfo {
	return []daemon.RelayInfo{{Name: "postgres", Claimed: true}}
}
func (f *fakeBackend) CreateRelay(context.Context, string) error { return f.err }
func (f *fakeBackend) DeleteRelay(context.Context, string) error { return f.err }
func (f *fakeBackend) Inlets() []daemon.InletInfo {
	var out []daemon.InletInfo
	for _, s := range f.inlets {
		out = append(out, daemon.InletInfo{InletInfo: portal.InletInfo{InletSpec: s}, State: daemon.StateRunning})
	}
	return out
}
func (f *fakeBackend) CreateInlet(s portal.InletSpec) (portal.InletInfo, error) {
	if f.err != nil {
		return portal.InletInfo{}, f.err
	}
	f.inlets = append(f.inlets, s)
	return portal.InletInfo{InletSpec: s, Listening: s.From}, nil
}
func (f *fakeBackend) DeleteInlet(string) error     { return f.err }
func (f *fakeBackend) Outlets() []daemon.OutletInfo { return nil }
func (f *fakeBackend) CreateOutlet(s portal.OutletSpec) (portal.OutletInfo, error) {
	return portal.OutletInfo{OutletSpec: s}, f.err
}
func (f *fakeBackend) DeleteOutlet(string) error        { return f.err }
func (f *fakeBackend) Workloads() []daemon.WorkloadInfo { return f.workloads }
func (f *fakeBackend) CreateWorkload(w daemon.Workload) (daemon.WorkloadInfo, error) {
	if f.err != nil {
		return daemon.WorkloadInfo{}, f.err
	}
	info := daemon.WorkloadInfo{Workload: w, Number: uint32(len(f.workloads) + 1)}
	f.workloads = append(f.workloads, info)
	return info, nil
}
func (f *fakeBackend) DeleteWorkload(name string) error {
	f.deleted = append(f.deleted, name)
	return f.err
}
func (f *fakeBackend) Datapath() daemon.DatapathStatus {
	return daemon.DatapathStatus{Enabled: true, PinDir: "/sys/fs/bpf/sluice", Listener: "127.0.0.1:4000",
		Attachments: []loader.Attachment{{Device: "br0", Ifindex: 3, Role: "assign", Hook: "tcx/ingress", Program: 7, Link: 9}},
		Maps:        []maps.Size{{Name: "services", Entries: 1, Max: 1024}},
		Portals: []daemon.PortalStatus{{Inlet: "pg", Service: "10.200.0.10:5432", Portal: 1,
			Counters: maps.PortalCounters{Steered: 2, Refused: 1}}}}
}

func serve(t *testing.T, b Backend) *api.Client {
	t.Helper()
	return api.NewClient(serveSocket(t, b))
}

// serveSocket serves b's API on a socket of its own and returns its path.
func serveSocket(t *testing.T, b Backend) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := api.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: Handler(b)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestRoundTrip(t *testing.T) {
	b := &fakeBackend{}
	c := serve(t, b)
	ctx := context.Background()
	st, err := c.Status(ctx)
	if err != nil || st.Node != "n1" {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	spec := apitype.InletSpec{Name: "i", From: "127.0.0.1:1", Via: "postgres", Allow: "postgres-outlet"}
	info, err := c.CreateInlet(ctx, spec)
	if err != nil || info.Listening != spec.From {
		t.Fatalf("CreateInlet = %+v, %v", info, err)
	}
	ins, err := c.Inlets(ctx)
	if err != nil || len(ins) != 1 || ins[0].InletSpec != spec {
		t.Fatalf("Inlets = %+v, %v", ins, err)
	}
	rs, err := c.Relays(ctx)
	if err != nil || len(rs) != 1 || rs[0].Name != "postgres" {
		t.Fatalf("Relays = %+v, %v", rs, err)
	}
}

func TestWorkloadsAndDatapathRoundTrip(t *testing.T) {
	b := &fakeBackend{}
	c := serve(t, b)
	ctx := context.Background()
	w := apitype.Workload{Name: "app", Address: "10.10.0.2", Attributes: map[string]string{"app": "analytics"}}
	info, err := c.CreateWorkload(ctx, w)
	if err != nil || info.Number != 1 || info.Attributes["app"] != "analytics" {
		t.Fatalf("CreateWorkload = %+v, %v", info, err)
	}
	ws, err := c.Workloads(ctx)
	if err != nil || len(ws) != 1 || ws[0].Name != "app" || ws[0].Address != "10.10.0.2" {
		t.Fatalf("Workloads = %+v, %v", ws, err)
	}
	if err := c.DeleteWorkload(ctx, "a/b"); err != nil || len(b.deleted) != 1 || b.deleted[0] != "a/b" {
		t.Fatalf("DeleteWorkload: %v, backend saw %q", err, b.deleted)
	}
	st, err := c.Datapath(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := b.Datapath()
	if !st.Enabled || st.Listener != want.Listener || len(st.Attachments) != 1 || !sameJSON(st.Attachments[0], want.Attachments[0]) ||
		len(st.Maps) != 1 || !sameJSON(st.Maps[0], want.Maps[0]) || len(st.Portals) != 1 || !sameJSON(st.Portals[0], want.Portals[0]) {
		t.Errorf("Datapath = %+v, want %+v", st, want)
	}
}

func TestErrorsReachTheClient(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{fmt.Errorf("create inlet: --from: %w", portal.ErrInvalid), http.StatusBadRequest},
		{fmt.Errorf("delete inlet %q: %w", "x", portal.ErrNotFound), http.StatusNotFound},
		{fmt.Errorf("create inlet %q: %w", "x", portal.ErrExists), http.StatusConflict},
		{fmt.Errorf("create inlet %q: %w", "x", daemon.ErrNoDatapath), http.StatusConflict},
		{fmt.Errorf("workload %q: --address %q: %w", "x", "y", daemon.ErrInvalidWorkload), http.StatusBadRequest},
		{fmt.Errorf("create relay: bad: %w", daemon.ErrInvalidRelayName), http.StatusBadRequest},
		{errors.New("disk on fire"), http.StatusInternalServerError},
	} {
		if got := statusOf(tc.err); got != tc.code {
			t.Errorf("statusOf(%v) = %d, want %d", tc.err, got, tc.code)
		}
		c := serve(t, &fakeBackend{err: tc.err})
		_, err := c.CreateInlet(context.Background(), apitype.InletSpec{})
		if err == nil || err.Error() != tc.err.Error() {
			t.Errorf("client error %v, want the agent's %q", err, tc.err)
		}
	}
}

func TestBadRequestBody(t *testing.T) {
	err := post(t, serveSocket(t, &fakeBackend{}), "/v1/tcp-inlets", map[string]any{"frm": "typo"})
	if err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Errorf("unknown field: %v", err)
	}
}

// sameJSON says whether a value the client decoded (apitype) and the one
// the backend gave (daemon, loader, maps) have the same JSON.
func sameJSON(got, want any) bool {
	g, gerr := json.Marshal(got)
	w, werr := json.Marshal(want)
	return gerr == nil && werr == nil && bytes.Equal(g, w)
}

// post sends body as JSON to path on the agent at sock, as api.Client
// does, and returns the error the agent answered with.
func post(t *testing.T, sock, path string, body any) error {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	resp, err := hc.Post("http://agent"+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var e apitype.ErrorBody
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatalf("%s answered %s without an error body: %v", path, resp.Status, err)
	}
	return errors.New(e.Error)
}
