package report

import (
	"bytes"
	"encoding/xml"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sample builds results for every path: each metric of path i is base*(i+1)
// plus 0, 1 and 2 in its three samples.
func sample() *Results {
	r := &Results{Date: "2026-01-01", Machine: Machine{NProc: 2, CPU: "test cpu", Kernel: "6.0"}, Config: Config{Repeats: 3, IdleConns: 10}}
	for i, id := range []string{Raw, Socat, Stunnel, SSH, WireGuard, Hub, Transparent, Direct, Sockmap, DirectNAT} {
		p := NewPath(id, "title "+id, "where "+id)
		for _, d := range Defs {
			for k := range 3 {
				p.Add(d.ID, float64(10*(i+1)+k))
			}
		}
		procs := []string{"client", "server"}
		if p.IsSluice() {
			procs = append(procs, InletProc, OutletProc, HubProc)
		}
		for _, proc := range procs {
			for k := range 3 {
				p.AddCPU(proc, float64(k+1))
				if p.IsSluice() && proc != "client" && proc != "server" {
					p.AddMemory(proc, float64(30+k))
				}
			}
		}
		// CPU per transaction: pgbench and postgres 5, 6, 7 µs; the
		// tunnel's total 100*(i+1) plus 0, 10, 20.
		for _, script := range PgScripts {
			for k := range 3 {
				p.AddCPUPerTx(script, PgbenchProc, float64(5+k))
				p.AddCPUPerTx(script, PostgresProc, float64(5+k))
				if id != Raw {
					p.AddCPUPerTx(script, TunnelTotal, float64(100*(i+1)+10*k))
				}
			}
		}
		r.Paths = append(r.Paths, p)
	}
	r.Targets = ComputeTargets(r)
	return r
}

func TestMetricSummary(t *testing.T) {
	var m Metric
	for _, v := range []float64{5, 1, 3} {
		m.Add(v)
	}
	if m.Median != 3 || m.Min != 1 || m.Max != 5 || len(m.Samples) != 3 {
		t.Errorf("%+v", m)
	}
	m.Add(4)
	if m.Median != 3.5 {
		t.Errorf("median of 1,3,4,5 = %v", m.Median)
	}
	if m.Samples[0] != 5 {
		t.Error("samples reordered: raw samples must stay in run order")
	}
}

func TestTargets(t *testing.T) {
	r := sample()
	byPath := map[string][]Target{}
	for _, tg := range r.Targets {
		byPath[tg.Path] = append(byPath[tg.Path], tg)
		if tg.Error != "" {
			t.Errorf("target %+v not computed", tg)
		}
	}
	for _, id := range []string{DirectNAT, Hub, Sockmap, Transparent} {
		if len(byPath[id]) != len(ratioSpecs)+1 {
			t.Fatalf("%d %s targets: %+v", len(byPath[id]), id, byPath[id])
		}
	}
	// Medians: hub (index 5) 61, CPU/tx total 610; direct through NAT
	// (index 9) 101, 1010; stunnel (index 2) 31, 310.
	type want struct {
		got float64
		met bool
	}
	wants := map[string]map[string]want{
		Hub: {
			"1-stream >= 1.3x stunnel":                                     {61.0 / 31, true},
			"RTT p50 <= stunnel's":                                         {61.0 / 31, false},
			"pgbench -S >= 1.1x stunnel":                                   {61.0 / 31, true},
			"CPU/tx (pgbench -S, all tunnel processes) <= 0.9x stunnel":    {610.0 / 310, false},
			"CPU/tx (pgbench TPC-B, all tunnel processes) <= 0.9x stunnel": {610.0 / 310, false},
			"setup p50 <= 0.3x stunnel":                                    {61.0 / 31, false},
			"hub CPU/GB <= 0.5x inlet agent's":                             {1, false},
		},
		DirectNAT: {
			"1-stream >= 1.5x stunnel":                                  {101.0 / 31, true},
			"RTT p50 <= 0.8x stunnel":                                   {101.0 / 31, false},
			"pgbench TPC-B >= 1.3x stunnel":                             {101.0 / 31, true},
			"CPU/tx (pgbench -S, all tunnel processes) <= 0.7x stunnel": {1010.0 / 310, false},
			"hub CPU/GB <= 0.05x inlet agent's (≈ 0)":                   {1, false},
		},
	}
	for id, w := range wants {
		for _, tg := range byPath[id] {
			if x, ok := w[tg.What]; ok {
				if tg.Got != x.got || tg.Met != x.met {
					t.Errorf("%s %s: got %v (met %v), want %v (met %v)", id, tg.What, tg.Got, tg.Met, x.got, x.met)
				}
				delete(w, tg.What)
			}
		}
		if len(w) != 0 {
			t.Errorf("%s targets missing: %v", id, w)
		}
	}
}

func TestTargetOfUnavailablePath(t *testing.T) {
	r := sample()
	r.Path(Stunnel).Unavailable = "not installed"
	r.Targets = ComputeTargets(r)
	for _, tg := range r.Targets {
		if strings.Contains(tg.What, "stunnel") && (tg.Error == "" || tg.Met) {
			t.Errorf("target against an unavailable path: %+v", tg)
		}
	}
}

func TestCheck(t *testing.T) {
	allowWG := func(p *Path) error {
		if p.ID == WireGuard {
			return nil
		}
		return errors.New("must be available")
	}
	r := sample()
	if err := Check(r, allowWG); err != nil {
		t.Fatalf("complete results: %v", err)
	}
	r.Path(WireGuard).Unavailable = "no tun"
	r.Path(WireGuard).Metrics = map[string]*Metric{}
	if err := Check(r, allowWG); err != nil {
		t.Errorf("wireguard unavailable: %v", err)
	}
	r.Path(Socat).Unavailable = "broken"
	if err := Check(r, allowWG); err == nil || !strings.Contains(err.Error(), "socat") {
		t.Errorf("socat unavailable passed: %v", err)
	}
	r = sample()
	m := r.Path(Hub).Metrics[PgTPCB]
	m.Samples = m.Samples[:2]
	if err := Check(r, allowWG); err == nil || !strings.Contains(err.Error(), "pg_tpcb") {
		t.Errorf("two samples passed: %v", err)
	}
	r = sample()
	r.Path(Direct).Memory = nil
	if err := Check(r, allowWG); err == nil || !strings.Contains(err.Error(), "idle memory") {
		t.Errorf("missing idle memory passed: %v", err)
	}
	r = sample()
	r.Path(Raw).CPU = nil
	if err := Check(r, allowWG); err == nil {
		t.Error("missing CPU passed")
	}
	r = sample()
	delete(r.Path(Socat).CPUPerTx, PgTPCB)
	if err := Check(r, allowWG); err == nil || !strings.Contains(err.Error(), "socat: no CPU per transaction of pg_tpcb") {
		t.Errorf("missing CPU per TPC-B transaction passed: %v", err)
	}
	r = sample()
	l := r.Path(Raw).CPUPerTx[PgSelect]
	l[0].Samples = l[0].Samples[:2]
	if err := Check(r, allowWG); err == nil || !strings.Contains(err.Error(), "CPU per transaction of pg_select of pgbench has 2 samples") {
		t.Errorf("two samples of CPU per transaction passed: %v", err)
	}
	// A target path that ran without its tunnel total (or stunnel without
	// it): the target is not computed, and check says so.
	r = sample()
	r.Path(Stunnel).CPUPerTx[PgSelect] = r.Path(Stunnel).CPUPerTx[PgSelect][:2]
	r.Targets = ComputeTargets(r)
	if err := Check(r, allowWG); err == nil || !strings.Contains(err.Error(), "not computed") {
		t.Errorf("target without stunnel's CPU per transaction passed: %v", err)
	}
}

func TestWriters(t *testing.T) {
	r := sample()
	r.Path(WireGuard).Unavailable = "cannot open /dev/net/tun"
	var text, md, svg bytes.Buffer
	WriteText(&text, r)
	WriteMarkdown(&md, r)
	if err := WriteSVG(&svg, r); err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{"text": text.String(), "markdown": md.String()} {
		for _, want := range []string{"title sluice-hub", "61.0 (60.0–62.0)", "unavailable: cannot open /dev/net/tun", "unavailable (see below)",
			"sluice-direct-nat (direct)", "3.26 (>= 1.5x stunnel): met", "1.97 (<= stunnel's): NOT met", "all tunnel processes 610 (600–620)"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s lacks %q:\n%s", name, want, out)
			}
		}
	}
	// The text table is aligned: the header and separator lines are as
	// long as the widest row of the first table.
	lines := strings.Split(text.String(), "\n")
	if len([]rune(lines[1])) < len([]rune(lines[2])) {
		t.Errorf("header shorter than its separator:\n%s\n%s", lines[1], lines[2])
	}
	// The SVG is well-formed XML with one bar per available path and metric.
	d := xml.NewDecoder(bytes.NewReader(svg.Bytes()))
	rects := 0
	for {
		tok, err := d.Token()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("svg is not well-formed: %v", err)
			}
			break
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			rects++
		}
	}
	// 9 available paths x 8 metrics, the background, the CPU bars of the
	// Sluice paths (5 x 5) and their memory bars (5 x 3).
	if want := 1 + 9*len(Defs) + 25 + 15; rects != want {
		t.Errorf("svg has %d rects, want %d", rects, want)
	}
	if !strings.Contains(svg.String(), "unavailable") {
		t.Error("svg does not show the unavailable path")
	}
}

func TestJSONRoundTripAndReadme(t *testing.T) {
	dir := t.TempDir()
	r := sample()
	path := filepath.Join(dir, "results.json")
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	back, err := ReadJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := back.Path(Hub).Metrics[Tput1]; got.Median != 61 || len(got.Samples) != 3 {
		t.Errorf("round trip: %+v", got)
	}
	readme := filepath.Join(dir, "README.md")
	os.WriteFile(readme, []byte("# x\n\n"+BeginMarker+"\nold\n"+EndMarker+"\ntail\n"), 0o644)
	if err := ReplaceSection(readme, "new table"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(readme)
	if want := "# x\n\n" + BeginMarker + "\nnew table\n" + EndMarker + "\ntail\n"; string(b) != want {
		t.Errorf("readme:\n%s\nwant:\n%s", b, want)
	}
	os.WriteFile(readme, []byte("no markers"), 0o644)
	if err := ReplaceSection(readme, "x"); err == nil {
		t.Error("no markers: no error")
	}
}
