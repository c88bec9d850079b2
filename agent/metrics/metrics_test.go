package metrics

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/sluicehq/sluice/agent/daemon"
	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/agent/hub/authority/store"
	"github.com/sluicehq/sluice/agent/portal"
	"github.com/sluicehq/sluice/agent/relay"
	"github.com/sluicehq/sluice/maps"
)

type fakeAgent struct {
	st daemon.Status
	dp daemon.DatapathStatus
}

func (f *fakeAgent) Status() daemon.Status           { return f.st }
func (f *fakeAgent) Datapath() daemon.DatapathStatus { return f.dp }

var expires = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func testAgent() *fakeAgent {
	in := daemon.InletInfo{State: daemon.StateRunning, InletInfo: portal.InletInfo{
		InletSpec: portal.InletSpec{Name: "pg", Transparent: true},
		Counters:  portal.CounterValues{Accepted: 7, Active: 1, Refused: 3, Failed: 1, BytesIn: 100, BytesOut: 2000, RefusedLocal: 2},
		Channels:  4, Warm: 1, WarmReused: 3,
	}}
	failed := daemon.InletInfo{State: daemon.StateFailed, InletInfo: portal.InletInfo{InletSpec: portal.InletSpec{Name: "down"}}}
	out := daemon.OutletInfo{State: daemon.StateRunning, OutletInfo: portal.OutletInfo{
		OutletSpec: portal.OutletSpec{Name: "db"}, Counters: portal.CounterValues{Accepted: 5, Refused: 1, BytesIn: 9, BytesOut: 8},
	}}
	return &fakeAgent{
		st: daemon.Status{Inlets: []daemon.InletInfo{in, failed}, Outlets: []daemon.OutletInfo{out},
			Credential: daemon.CredentialStatus{Expires: expires},
			Hub:        relay.Status{Hub: "hub:4443", Connected: true, MemberGeneration: 6}},
		dp: daemon.DatapathStatus{Enabled: true, Portals: []daemon.PortalStatus{{Inlet: "pg", Portal: 1,
			Counters: maps.PortalCounters{Steered: 11, Refused: 5, NoListener: 1, Spoofed: 2, Packets: 40, Bytes: 4000}}}},
	}
}

// TestAgentCollector: each counter of the agent reaches its metric, with
// the labels docs/operations.md gives, and refusals split by reason.
func TestAgentCollector(t *testing.T) {
	c := NewAgentCollector(testAgent())
	want := `
# HELP sluice_portal_connections_refused_total Connections the portal refused, by reason: policy (the peer's attributes, on either side) or local (the inlet's --allow-local).
# TYPE sluice_portal_connections_refused_total counter
sluice_portal_connections_refused_total{kind="inlet",portal="pg",reason="local"} 2
sluice_portal_connections_refused_total{kind="inlet",portal="pg",reason="policy"} 1
sluice_portal_connections_refused_total{kind="outlet",portal="db",reason="policy"} 1
# HELP sluice_portal_bytes_total Plaintext bytes the portal carried, by direction: to_service or from_service.
# TYPE sluice_portal_bytes_total counter
sluice_portal_bytes_total{direction="from_service",kind="inlet",portal="pg"} 2000
sluice_portal_bytes_total{direction="from_service",kind="outlet",portal="db"} 8
sluice_portal_bytes_total{direction="to_service",kind="inlet",portal="pg"} 100
sluice_portal_bytes_total{direction="to_service",kind="outlet",portal="db"} 9
# HELP sluice_portal_up Whether the portal runs (1) or is configured but failed to start (0).
# TYPE sluice_portal_up gauge
sluice_portal_up{kind="inlet",portal="down"} 0
sluice_portal_up{kind="inlet",portal="pg"} 1
sluice_portal_up{kind="outlet",portal="db"} 1
# HELP sluice_inlet_warm_reuses_total Connections of the inlet that a warm channel carried, without a new handshake.
# TYPE sluice_inlet_warm_reuses_total counter
sluice_inlet_warm_reuses_total{portal="pg"} 3
# HELP sluice_datapath_spoofed_total Of the kernel's refusals, packets whose source address is bound to another interface.
# TYPE sluice_datapath_spoofed_total counter
sluice_datapath_spoofed_total{portal="pg"} 2
# HELP sluice_datapath_steered_total Connections the kernel steered into the agent for the transparent portal.
# TYPE sluice_datapath_steered_total counter
sluice_datapath_steered_total{portal="pg"} 11
# HELP sluice_credential_expiry_timestamp_seconds When the agent's current credential expires, in seconds since the Unix epoch.
# TYPE sluice_credential_expiry_timestamp_seconds gauge
sluice_credential_expiry_timestamp_seconds 1.893553445e+09
# HELP sluice_hub_connected Whether the agent's control connection to the hub is up (1) or not (0).
# TYPE sluice_hub_connected gauge
sluice_hub_connected 1
`
	err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"sluice_portal_connections_refused_total", "sluice_portal_bytes_total", "sluice_portal_up",
		"sluice_inlet_warm_reuses_total", "sluice_datapath_spoofed_total", "sluice_datapath_steered_total",
		"sluice_credential_expiry_timestamp_seconds", "sluice_hub_connected")
	if err != nil {
		t.Error(err)
	}
}

// TestAgentCollectorKernelError: a failed read of the kernel's maps makes
// the scrape say so, instead of reporting zeros.
func TestAgentCollectorKernelError(t *testing.T) {
	a := testAgent()
	a.dp.Error = "map lookup: operation not permitted"
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewAgentCollector(a))
	_, err := reg.Gather()
	if err == nil || !strings.Contains(err.Error(), "operation not permitted") {
		t.Fatalf("Gather: %v, want the kernel read's error", err)
	}
}

type fakeHub struct{ st hub.Stats }

func (f *fakeHub) Stats() hub.Stats { return f.st }

// TestHubCollector: the hub's Stats and members reach their metrics.
func TestHubCollector(t *testing.T) {
	h := &fakeHub{st: hub.Stats{Sessions: 3, Pending: 2, Spliced: 4096, Authority: "local",
		Refused: hub.Refusals{DialRate: 4, PerSource: 1}}}
	members := func() ([]store.Member, error) {
		return []store.Member{{NodeID: "a"}, {NodeID: "b"}, {NodeID: "c", Revoked: true}}, nil
	}
	want := `
# HELP sluice_hub_members The project's members in the authority's database, by state: active or revoked (with the authority in the hub's process).
# TYPE sluice_hub_members gauge
sluice_hub_members{state="active"} 2
sluice_hub_members{state="revoked"} 1
# HELP sluice_hub_relayed_bytes_total Bytes relayed in both directions by data sessions that have ended.
# TYPE sluice_hub_relayed_bytes_total counter
sluice_hub_relayed_bytes_total 4096
# HELP sluice_hub_pending_pairings Data sessions waiting for their second side.
# TYPE sluice_hub_pending_pairings gauge
sluice_hub_pending_pairings 2
`
	c := NewHubCollector(h, members)
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "sluice_hub_members", "sluice_hub_relayed_bytes_total", "sluice_hub_pending_pairings"); err != nil {
		t.Error(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if got := testutil.ToFloat64(gatherOne(t, reg, "sluice_hub_refusals_total", "dial_rate")); got != 4 {
		t.Errorf("refusals{reason=dial_rate} = %v, want 4", got)
	}
	if err := HubReady(h.st, members); err != nil {
		t.Errorf("HubReady with a readable database: %v", err)
	}
	broken := func() ([]store.Member, error) { return nil, errors.New("database closed") }
	if err := HubReady(h.st, broken); !errors.Is(err, ErrDatabaseError) {
		t.Errorf("HubReady with a broken database: %v, want ErrDatabaseError", err)
	}
	if err := HubReady(hub.Stats{Authority: "absent"}, nil); !errors.Is(err, ErrNoAuthority) {
		t.Errorf("HubReady of a relay without its authority: %v, want ErrNoAuthority", err)
	}
}

// gatherOne returns, as a collector, the value of the metric name whose
// first label value is label.
func gatherOne(t *testing.T, reg *prometheus.Registry, name, label string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == label {
				g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
				g.Set(m.GetCounter().GetValue())
				return g
			}
		}
	}
	t.Fatalf("no %s{%q}", name, label)
	return nil
}

// TestLint: a whole scrape, the Go and process collectors with the agent's
// and the hub's, passes promlint.
func TestLint(t *testing.T) {
	reg := NewRegistry(NewAgentCollector(testAgent()), NewHubCollector(&fakeHub{}, func() ([]store.Member, error) { return nil, nil }))
	tm := NewTimings(reg)
	tm.Handshake("pg", 3*time.Millisecond)
	tm.Setup("pg", 4*time.Millisecond)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// TestAgentReady: each condition of readiness, broken alone, gives its
// reason.
func TestAgentReady(t *testing.T) {
	now := expires.Add(-time.Hour)
	a := testAgent()
	if err := AgentReady(a.st, a.dp, true, now); err != nil {
		t.Fatalf("ready agent: %v", err)
	}
	if err := AgentReady(a.st, a.dp, false, expires); !errors.Is(err, ErrNoCredential) {
		t.Errorf("expired credential: %v, want ErrNoCredential", err)
	}
	down := *a
	down.st.Hub.Connected, down.st.Hub.LastError = false, "connection refused"
	if err := AgentReady(down.st, down.dp, false, now); !errors.Is(err, ErrHubDown) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("hub down: %v, want ErrHubDown with the hub's error", err)
	}
	off := *a
	off.dp = daemon.DatapathStatus{Reason: "kernel too old"}
	if err := AgentReady(off.st, off.dp, false, now); !errors.Is(err, ErrDatapathOff) {
		t.Errorf("transparent inlet without data path: %v, want ErrDatapathOff", err)
	}
	off.st.Inlets = nil
	if err := AgentReady(off.st, off.dp, false, now); err != nil {
		t.Errorf("no data path, none needed: %v", err)
	}
	if err := AgentReady(off.st, off.dp, true, now); !errors.Is(err, ErrDatapathOff) {
		t.Errorf("--datapath on without data path: %v, want ErrDatapathOff", err)
	}
	held := *a
	held.st.Pending = []string{"configuration: the configuration file is not applied yet"}
	if err := AgentReady(held.st, held.dp, true, now); !errors.Is(err, ErrPending) || !strings.Contains(err.Error(), "not applied yet") {
		t.Errorf("held back: %v, want ErrPending with the reason", err)
	}
}

// TestHandler: /healthz answers while the process serves; /readyz gives
// 503 and one line while not ready; /metrics serves the text format.
func TestHandler(t *testing.T) {
	var why error = errors.New("not connected to the hub\nsecond line")
	srv := httptest.NewServer(Handler(NewRegistry(NewAgentCollector(testAgent())), func() error { return why }))
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 503 || body != "not ready: not connected to the hub second line\n" {
		t.Errorf("/readyz not ready: %d %q", code, body)
	}
	why = nil
	if code, body := get("/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz ready: %d %q", code, body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "sluice_hub_connected 1") || !strings.Contains(body, "go_goroutines") || !strings.Contains(body, "process_") {
		t.Errorf("/metrics: %d\n%s", code, body)
	}
}
