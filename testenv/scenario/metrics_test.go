package scenario_test

import (
	"bytes"
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/sluicehq/sluice/testenv"
	"github.com/sluicehq/sluice/testenv/scenario"
)

// scrape is one parsed scrape of a --metrics listener.
type scrape map[string]*dto.MetricFamily

// get returns the value of the counter, gauge or histogram count name whose
// labels include want (label, value pairs); 0 if there is none.
func (s scrape) get(name string, want ...string) float64 {
	mf := s[name]
	if mf == nil {
		return 0
	}
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			match = match && labels[want[i]] == want[i+1]
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return 0
}

// scrapeIn scrapes the --metrics listener in ns from inside ns, parses it
// with the Prometheus text parser and lints it with promlint.
func scrapeIn(t *testing.T, ctx context.Context, ns *testenv.NS) (scrape, []byte) {
	t.Helper()
	code, body, err := scenario.Get(ctx, ns, "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("scrape %s: %d %v\n%s", ns.Name(), code, err, body)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse the scrape of %s: %v", ns.Name(), err)
	}
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint, %s: %s: %s", ns.Name(), p.Metric, p.Text)
	}
	return mfs, body
}

// waitReady waits until /readyz in ns answers 200; /healthz must answer
// 200 meanwhile.
func waitReady(t *testing.T, ctx context.Context, ns *testenv.NS) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if code, body, err := scenario.Get(ctx, ns, "/healthz"); err != nil || code != 200 {
			t.Fatalf("/healthz in %s: %d %v %s", ns.Name(), code, err, body)
		}
		code, body, err := scenario.Get(ctx, ns, "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		if code == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz in %s after 10s: %d %s", ns.Name(), code, body)
		}
	}
}

// TestMetricsScenario: during the seed story with the BPF data path, the
// agents' and the hub's metrics, scraped from inside their namespaces and
// parsed with the Prometheus text parser, move by exactly what the test
// did: N connections of the app through the transparent portal, and one
// connection of it refused in the kernel.
func TestMetricsScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end scenario skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := startScenarioWith(t, ctx, scenario.Options{AppDir: appDir, Mode: scenario.Transparent, Metrics: true})
	analysis, bank, internet := s.Seed.AnalysisHost, s.Seed.BankHost, s.Seed.Internet
	for _, ns := range []*testenv.NS{analysis, bank, internet} {
		waitReady(t, ctx, ns)
	}
	// The first connection opens the inlet's first channel; the test
	// counts from after it, so that every figure is its own doing.
	if got, err := s.Psql(ctx, s.Seed.App.NS, scenario.ServiceIP, scenario.ServicePort, "SELECT 1"); err != nil || got != "1" {
		t.Fatalf("the app through the portal: %q, %v", got, err)
	}
	in := []string{"portal", scenario.TransparentInlet, "kind", "inlet"}
	out := []string{"portal", scenario.PostgresOutlet, "kind", "outlet"}
	idle := func(ns *testenv.NS, labels []string) scrape {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			m, _ := scrapeIn(t, ctx, ns)
			if m.get("sluice_portal_connections_active", labels...) == 0 {
				return m
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: connections still active after 10s", ns.Name())
			}
		}
	}
	a0, b0 := idle(analysis, in), idle(bank, out)

	const n = 3
	for i := range n {
		if got, err := s.Psql(ctx, s.Seed.App.NS, scenario.ServiceIP, scenario.ServicePort, "SELECT 1"); err != nil || got != "1" {
			t.Fatalf("connection %d through the portal: %q, %v", i, got, err)
		}
	}
	if err := s.DisallowApp(ctx); err != nil {
		t.Fatal(err)
	}
	refused(t, ctx, s.Seed.App.NS)
	if err := s.AllowApp(ctx); err != nil {
		t.Fatal(err)
	}
	a1, b1 := idle(analysis, in), idle(bank, out)
	h1, hubBody := scrapeIn(t, ctx, internet)
	_, analysisBody := scrapeIn(t, ctx, analysis)

	delta := func(before, after scrape, name string, labels ...string) float64 {
		return after.get(name, labels...) - before.get(name, labels...)
	}
	kern := []string{"portal", scenario.TransparentInlet}
	for _, c := range []struct {
		what      string
		got, want float64
	}{
		{"inlet accepted", delta(a0, a1, "sluice_portal_connections_accepted_total", in...), n},
		{"inlet refused by policy", delta(a0, a1, "sluice_portal_connections_refused_total", append(in, "reason", "policy")...), 0},
		{"inlet refused by --allow-local", delta(a0, a1, "sluice_portal_connections_refused_total", append(in, "reason", "local")...), 0},
		{"inlet failed", delta(a0, a1, "sluice_portal_connections_failed_total", in...), 0},
		{"inlet connection setups timed", delta(a0, a1, "sluice_inlet_connection_setup_duration_seconds", "portal", scenario.TransparentInlet), n},
		{"inlet channels opened + warm reuses", delta(a0, a1, "sluice_inlet_channels_opened_total", kern...) + delta(a0, a1, "sluice_inlet_warm_reuses_total", kern...), n},
		{"inlet handshakes timed = channels opened", delta(a0, a1, "sluice_inlet_handshake_duration_seconds", kern...), delta(a0, a1, "sluice_inlet_channels_opened_total", kern...)},
		{"kernel steered", delta(a0, a1, "sluice_datapath_steered_total", kern...), n},
		{"kernel refused", delta(a0, a1, "sluice_datapath_refused_total", kern...), 1},
		{"kernel spoofed", delta(a0, a1, "sluice_datapath_spoofed_total", kern...), 0},
		{"kernel no listener", delta(a0, a1, "sluice_datapath_no_listener_total", kern...), 0},
		{"analysis hub connected", a1.get("sluice_hub_connected"), 1},
		{"analysis data path", a1.get("sluice_datapath_enabled"), 1},
		{"outlet accepted", delta(b0, b1, "sluice_portal_connections_accepted_total", out...), n},
		{"outlet refused", delta(b0, b1, "sluice_portal_connections_refused_total", append(out, "reason", "policy")...), 0},
		{"outlet failed", delta(b0, b1, "sluice_portal_connections_failed_total", out...), 0},
		{"hub sessions (two agents)", h1.get("sluice_hub_sessions"), 2},
		{"hub active members", h1.get("sluice_hub_members", "state", "active"), 2},
		{"hub authority local", h1.get("sluice_hub_authority", "state", "local"), 1},
		{"hub dial-rate refusals", h1.get("sluice_hub_refusals_total", "reason", "dial_rate"), 0},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
	for _, dir := range []string{"to_service", "from_service"} {
		l := append(append([]string{}, in...), "direction", dir)
		if d := delta(a0, a1, "sluice_portal_bytes_total", l...); d <= 0 {
			t.Errorf("inlet bytes %s moved by %v, want more than 0", dir, d)
		}
	}
	if exp := time.Unix(int64(a1.get("sluice_credential_expiry_timestamp_seconds")), 0); !exp.After(time.Now()) {
		t.Errorf("credential expiry %v is not in the future", exp)
	}
	if a1.get("go_goroutines") == 0 || a1["process_resident_memory_bytes"] == nil {
		t.Error("the scrape lacks the Go or the process collector")
	}
	t.Logf("analysis agent's scrape (sluice_ metrics, no buckets):\n%s", trimScrape(analysisBody))
	t.Logf("hub's scrape (sluice_ metrics):\n%s", trimScrape(hubBody))

	// Without its hub an agent is alive but not ready, and says why.
	if err := s.Hub.Stop(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		code, body, err := scenario.Get(ctx, analysis, "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		if code == 503 {
			if !strings.HasPrefix(string(body), "not ready: not connected to the hub") || strings.Count(string(body), "\n") != 1 {
				t.Errorf("/readyz without the hub: %q, want one line that says the hub is not connected", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz 10s after the hub stopped: %d %s", code, body)
		}
	}
	if code, body, err := scenario.Get(ctx, analysis, "/healthz"); err != nil || code != 200 {
		t.Errorf("/healthz without the hub: %d %v %s", code, err, body)
	}
	if m, _ := scrapeIn(t, ctx, analysis); m.get("sluice_hub_connected") != 0 {
		t.Error("sluice_hub_connected is not 0 once the hub stopped")
	}
}

// trimScrape keeps the samples of Sluice's own metrics, without the
// histograms' buckets.
func trimScrape(body []byte) string {
	var keep []string
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "sluice_") && !strings.Contains(line, "_bucket{") {
			keep = append(keep, line)
		}
	}
	sort.Strings(keep)
	return strings.Join(keep, "\n")
}
