// Package report holds the benchmark's results (every raw sample and the
// medians), the target ratios computed from them, and writes them as a text
// table, JSON, a Markdown section and an SVG chart. It also checks that a
// run is complete; it never judges a speed.
package report

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
)

// Def describes one per-path metric.
type Def struct {
	ID     string
	Label  string // column heading
	Unit   string
	Higher bool // higher is better
}

// Defs are the metrics every available path must have, in table order.
var Defs = []Def{
	{ID: Tput1, Label: "1-stream", Unit: "Gbit/s", Higher: true},
	{ID: Tput4, Label: "4-stream", Unit: "Gbit/s", Higher: true},
	{ID: RTTp50, Label: "RTT p50", Unit: "µs"},
	{ID: RTTp99, Label: "RTT p99", Unit: "µs"},
	{ID: SetupP50, Label: "setup p50", Unit: "µs"},
	{ID: SetupP99, Label: "setup p99", Unit: "µs"},
	{ID: PgSelect, Label: "pgbench -S", Unit: "tps", Higher: true},
	{ID: PgTPCB, Label: "pgbench TPC-B", Unit: "tps", Higher: true},
}

// Metric IDs.
const (
	Tput1    = "tput1"
	Tput4    = "tput4"
	RTTp50   = "rtt_p50"
	RTTp99   = "rtt_p99"
	SetupP50 = "setup_p50"
	SetupP99 = "setup_p99"
	PgSelect = "pg_select"
	PgTPCB   = "pg_tpcb"
)

// Units of the per-process metrics.
const (
	CPUUnit   = "s/GB"
	MemUnit   = "KiB/conn"
	CPUTxUnit = "µs/tx"
)

// PgScripts are the pgbench scripts whose CPU per transaction is measured
// (keys of Path.CPUPerTx), in table order.
var PgScripts = []string{PgSelect, PgTPCB}

// Path IDs, in run order.
const (
	Raw         = "raw"
	Socat       = "socat"
	Stunnel     = "stunnel"
	SSH         = "ssh"
	WireGuard   = "wireguard"
	Hub         = "sluice-hub"
	Sockmap     = "sluice-sockmap"
	Transparent = "sluice-transparent"
	Direct      = "sluice-direct"
	DirectNAT   = "sluice-direct-nat"
)

// Metric is the samples of one measurement and their summary.
type Metric struct {
	Unit    string    `json:"unit"`
	Samples []float64 `json:"samples"`
	Median  float64   `json:"median"`
	Min     float64   `json:"min"`
	Max     float64   `json:"max"`
}

// Add records a sample and updates the summary.
func (m *Metric) Add(v float64) {
	m.Samples = append(m.Samples, v)
	s := append([]float64(nil), m.Samples...)
	sort.Float64s(s)
	m.Min, m.Max = s[0], s[len(s)-1]
	if n := len(s); n%2 == 1 {
		m.Median = s[n/2]
	} else {
		m.Median = (s[n/2-1] + s[n/2]) / 2
	}
}

// ProcMetric is a per-process metric (CPU per GB, memory per connection).
type ProcMetric struct {
	Process string `json:"process"`
	Metric
}

// Path is one way from the app to the service and what was measured on it.
type Path struct {
	ID    string `json:"id"`
	Title string `json:"title"`
	Where string `json:"where"` // where its pieces run
	// Unavailable says why the path could not be measured ("" if it was).
	Unavailable string             `json:"unavailable,omitempty"`
	Metrics     map[string]*Metric `json:"metrics"`
	CPU         []*ProcMetric      `json:"cpu_per_gb,omitempty"`        // s/GB during single-stream throughput
	Memory      []*ProcMetric      `json:"idle_kib_per_conn,omitempty"` // Sluice paths: agents' RSS per idle connection
	// CPUPerTx is, per pgbench script (PgSelect, PgTPCB), the CPU time of
	// each process (and TunnelTotal, the sum over the tunnel's own) per
	// transaction pgbench reported, in µs.
	CPUPerTx  map[string][]*ProcMetric `json:"cpu_per_tx,omitempty"`
	IdleConns int                      `json:"idle_conns,omitempty"` // how many idle connections Memory was measured with
	IdleNote  string                   `json:"idle_note,omitempty"`  // why fewer than Config.IdleConns, if so
}

// NewPath returns a path with no samples.
func NewPath(id, title, where string) *Path {
	return &Path{ID: id, Title: title, Where: where, Metrics: map[string]*Metric{}}
}

// Add records a sample of a per-path metric.
func (p *Path) Add(id string, v float64) *Metric {
	m := p.Metrics[id]
	if m == nil {
		m = &Metric{Unit: def(id).Unit}
		p.Metrics[id] = m
	}
	m.Add(v)
	return m
}

// AddCPU records a CPU-per-GB sample of a process.
func (p *Path) AddCPU(process string, v float64) *Metric {
	return addProc(&p.CPU, process, CPUUnit, v)
}

// AddMemory records a KiB-per-idle-connection sample of a process.
func (p *Path) AddMemory(process string, v float64) *Metric {
	return addProc(&p.Memory, process, MemUnit, v)
}

// AddCPUPerTx records a CPU-per-transaction sample (µs) of a process
// during the pgbench script.
func (p *Path) AddCPUPerTx(script, process string, v float64) *Metric {
	if p.CPUPerTx == nil {
		p.CPUPerTx = map[string][]*ProcMetric{}
	}
	l := p.CPUPerTx[script]
	m := addProc(&l, process, CPUTxUnit, v)
	p.CPUPerTx[script] = l
	return m
}

func addProc(list *[]*ProcMetric, process, unit string, v float64) *Metric {
	for _, pm := range *list {
		if pm.Process == process {
			pm.Add(v)
			return &pm.Metric
		}
	}
	pm := &ProcMetric{Process: process, Metric: Metric{Unit: unit}}
	pm.Add(v)
	*list = append(*list, pm)
	return &pm.Metric
}

// Proc returns the named process's metric from list, or nil.
func Proc(list []*ProcMetric, process string) *Metric {
	for _, pm := range list {
		if pm.Process == process {
			return &pm.Metric
		}
	}
	return nil
}

// IsSluice tells whether the path is one of Sluice's.
func (p *Path) IsSluice() bool {
	return p.ID == Hub || p.ID == Sockmap || p.ID == Transparent || p.ID == Direct || p.ID == DirectNAT
}

func def(id string) Def {
	for _, d := range Defs {
		if d.ID == id {
			return d
		}
	}
	return Def{ID: id, Label: id}
}

// Machine describes where the run happened.
type Machine struct {
	NProc  int    `json:"nproc"`
	CPU    string `json:"cpu"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
}

// Config is how the run measured.
type Config struct {
	Quick             bool    `json:"quick"`
	Repeats           int     `json:"repeats"`
	ThroughputSeconds float64 `json:"throughput_seconds"`
	LatencySeconds    float64 `json:"latency_seconds"`
	SetupSeconds      float64 `json:"setup_seconds"`
	SetupMaxConns     int     `json:"setup_max_conns"`
	Pgbench           string  `json:"pgbench"`    // the duration or count flags
	IdleConns         int     `json:"idle_conns"` // asked for; a path may hold fewer (Path.IdleConns)
	FileLimit         uint64  `json:"file_limit"`
	FileLimitNote     string  `json:"file_limit_note,omitempty"`
	// Observers ran on the Sluice paths while they were measured:
	// "capture", "metrics" (sluice-bench run --capture, --metrics); none if
	// absent.
	Observers []string `json:"observers,omitempty"`
}

// Results is a whole run.
type Results struct {
	Date     string   `json:"date"`
	Machine  Machine  `json:"machine"`
	Config   Config   `json:"config"`
	Paths    []*Path  `json:"paths"`
	Targets  []Target `json:"targets"`
	Duration float64  `json:"duration_seconds"`
}

// Path returns the path with id, or nil.
func (r *Results) Path(id string) *Path {
	for _, p := range r.Paths {
		if p.ID == id {
			return p
		}
	}
	return nil
}

// WriteJSON writes the results, indented, to path.
func (r *Results) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// ReadJSON reads results written by WriteJSON.
func ReadJSON(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read results: %w", err)
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode results %s: %w", path, err)
	}
	return &r, nil
}
