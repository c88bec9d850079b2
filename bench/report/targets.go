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

// TargetPaths are the Sluice paths the targets are computed for: the hub
// path with the explicit inlet (the target), and as extra lines the same
// with the hub relaying in the kernel (agent hub --relay sockmap) and the
// transparent one.
var TargetPaths = []string{Hub, Sockmap, Transparent}

// ComputeTargets returns the target lines for every path of TargetPaths.
func ComputeTargets(r *Results) []Target {
	var out []Target
	for _, id := range TargetPaths {
		out = append(out, targetsFor(r, id)...)
	}
	return out
}

// ratioSpec is a target of the form path.metric OP want * ref.metric.
type ratioSpec struct {
	metric string
	ref    string
	op     string
	want   float64
}

var ratioSpecs = []ratioSpec{
	{Tput1, Stunnel, ">=", 1.5},
	{Tput1, Raw, ">=", 0.6},
	{RTTp50, Stunnel, "<=", 0.35},
	{PgSelect, Stunnel, ">=", 1.5},
	{PgSelect, Raw, ">=", 0.7},
	{SetupP50, Stunnel, "<=", 1},
}

// MaxIdleKiB is the memory target per idle portal connection, per agent.
const MaxIdleKiB = 64

func targetsFor(r *Results, id string) []Target {
	p := r.Path(id)
	var out []Target
	for _, s := range ratioSpecs {
		t := Target{Path: id, What: fmt.Sprintf("%s %s %s", def(s.metric).Label, s.op, fmtRatio(s.want, s.ref)), Op: s.op, Want: s.want}
		num, err1 := median(p, s.metric)
		den, err2 := median(r.Path(s.ref), s.metric)
		out = append(out, finish(t, num, den, firstErr(err1, err2)))
	}
	t := Target{Path: id, What: "hub CPU/GB <= 0.25x inlet agent's", Op: "<=", Want: 0.25}
	num, err1 := procMedian(p, p.cpu(), HubProc)
	den, err2 := procMedian(p, p.cpu(), InletProc)
	out = append(out, finish(t, num, den, firstErr(err1, err2)))
	for _, agent := range []string{InletProc, OutletProc} {
		t := Target{Path: id, What: fmt.Sprintf("%s memory per idle connection <= %d KiB", agent, MaxIdleKiB), Op: "<=", Want: MaxIdleKiB}
		v, err := procMedian(p, p.memory(), agent)
		out = append(out, finish(t, v, 1, err))
	}
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

func (p *Path) memory() []*ProcMetric {
	if p == nil {
		return nil
	}
	return p.Memory
}
