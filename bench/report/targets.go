package report

import "fmt"

// Process names the harness gives the pieces of Sluice paths.
const (
	HubProc    = "hub"
	InletProc  = "inlet agent"
	OutletProc = "outlet agent"
)

// Target is one target ratio (or limit), computed from medians of one run.
type Target struct {
	Path  string  `json:"path"`
	What  string  `json:"what"`
	Op    string  `json:"op"`              // ">=" or "<="
	Want  float64 `json:"want"`            // the ratio or limit
	Got   float64 `json:"got"`             // the measured ratio or value
	Met   bool    `json:"met"`             // Got Op Want
	Error string  `json:"error,omitempty"` // why it could not be computed
}

// TunnelTotal names the per-sample sum of the CPU of a path's own
// processes (the tunnel: agents and hub, or a tool's two ends and its
// forwarder), without the client and the server, in Path.CPUPerTx.
const TunnelTotal = "all tunnel processes"

// The processes at the ends of a pgbench sample, for reference in
// Path.CPUPerTx.
const (
	PgbenchProc  = "pgbench"
	PostgresProc = "postgres"
)

// TargetPaths are the Sluice paths the targets (issue 15) are computed for,
// each with the class of targets it must meet: the direct path through the
// NATs and the hub path with the explicit inlet (the targets), and as extra
// lines with the hub's targets the same with the hub relaying in the kernel
// (agent hub --relay sockmap) and the transparent one.
var TargetPaths = []struct{ ID, Class string }{
	{DirectNAT, ClassDirect},
	{Hub, ClassHub},
	{Sockmap, ClassHub},
	{Transparent, ClassHub},
}

// Target classes: which column of the targets table a path must meet.
const (
	ClassDirect = "direct"
	ClassHub    = "hub"
)

// ComputeTargets returns the target lines for every path of TargetPaths.
func ComputeTargets(r *Results) []Target {
	var out []Target
	for _, tp := range TargetPaths {
		out = append(out, targetsFor(r, tp.ID, tp.Class)...)
	}
	return out
}

// ratioSpec is a target of the form path.metric OP want * stunnel.metric,
// want per class. With script, the metric is the CPU per transaction of
// that pgbench script summed over the tunnel's processes (TunnelTotal).
type ratioSpec struct {
	metric string
	script string
	op     string
	want   map[string]float64
}

// ratioSpecs are issue 15's targets against stunnel, ratios of medians.
var ratioSpecs = []ratioSpec{
	{metric: Tput1, op: ">=", want: map[string]float64{ClassDirect: 1.5, ClassHub: 1.3}},
	{metric: RTTp50, op: "<=", want: map[string]float64{ClassDirect: 0.8, ClassHub: 1.0}},
	{metric: PgSelect, op: ">=", want: map[string]float64{ClassDirect: 1.3, ClassHub: 1.1}},
	{metric: PgTPCB, op: ">=", want: map[string]float64{ClassDirect: 1.3, ClassHub: 1.1}},
	{script: PgSelect, op: "<=", want: map[string]float64{ClassDirect: 0.7, ClassHub: 0.9}},
	{script: PgTPCB, op: "<=", want: map[string]float64{ClassDirect: 0.7, ClassHub: 0.9}},
	{metric: SetupP50, op: "<=", want: map[string]float64{ClassDirect: 0.3, ClassHub: 0.3}},
}

// hubCPUWant is the hub's CPU per GB against the inlet agent's: "≈ 0" on
// the direct path (the hub carries no byte: anything but the control
// connection's keepalives would show), at most half on the hub path.
var hubCPUWant = map[string]float64{ClassDirect: 0.05, ClassHub: 0.5}

func targetsFor(r *Results, id, class string) []Target {
	p := r.Path(id)
	var out []Target
	for _, s := range ratioSpecs {
		want := s.want[class]
		label := def(s.metric).Label
		if s.script != "" {
			label = fmt.Sprintf("CPU/tx (%s, all tunnel processes)", def(s.script).Label)
		}
		t := Target{Path: id, What: fmt.Sprintf("%s %s %s", label, s.op, fmtRatio(want, Stunnel)), Op: s.op, Want: want}
		var num, den float64
		var err1, err2 error
		if s.script != "" {
			num, err1 = procMedian(p, p.cpuTx(s.script), TunnelTotal)
			den, err2 = procMedian(r.Path(Stunnel), r.Path(Stunnel).cpuTx(s.script), TunnelTotal)
		} else {
			num, err1 = median(p, s.metric)
			den, err2 = median(r.Path(Stunnel), s.metric)
		}
		out = append(out, finish(t, num, den, firstErr(err1, err2)))
	}
	want := hubCPUWant[class]
	t := Target{Path: id, What: fmt.Sprintf("hub CPU/GB <= %gx inlet agent's", want), Op: "<=", Want: want}
	if class == ClassDirect {
		t.What += " (≈ 0)"
	}
	num, err1 := procMedian(p, p.cpu(), HubProc)
	den, err2 := procMedian(p, p.cpu(), InletProc)
	out = append(out, finish(t, num, den, firstErr(err1, err2)))
	return out
}

func fmtRatio(want float64, ref string) string {
	if want == 1 {
		return ref + "'s"
	}
	return fmt.Sprintf("%gx %s", want, ref)
}

func finish(t Target, num, den float64, err error) Target {
	switch {
	case err != nil:
		t.Error = err.Error()
	case den == 0:
		t.Error = "reference is zero"
	default:
		t.Got = num / den
		if t.Op == ">=" {
			t.Met = t.Got >= t.Want
		} else {
			t.Met = t.Got <= t.Want
		}
	}
	return t
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func median(p *Path, metric string) (float64, error) {
	if err := usable(p); err != nil {
		return 0, err
	}
	m := p.Metrics[metric]
	if m == nil || len(m.Samples) == 0 {
		return 0, fmt.Errorf("%s has no %s", p.ID, metric)
	}
	return m.Median, nil
}

func procMedian(p *Path, list []*ProcMetric, process string) (float64, error) {
	if err := usable(p); err != nil {
		return 0, err
	}
	m := Proc(list, process)
	if m == nil || len(m.Samples) == 0 {
		return 0, fmt.Errorf("%s has no figure for the %s", p.ID, process)
	}
	return m.Median, nil
}

func usable(p *Path) error {
	if p == nil {
		return fmt.Errorf("path not in the run")
	}
	if p.Unavailable != "" {
		return fmt.Errorf("%s unavailable", p.ID)
	}
	return nil
}

func (p *Path) cpu() []*ProcMetric {
	if p == nil {
		return nil
	}
	return p.CPU
}

func (p *Path) cpuTx(script string) []*ProcMetric {
	if p == nil {
		return nil
	}
	return p.CPUPerTx[script]
}
