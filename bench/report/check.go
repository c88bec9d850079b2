package report

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// MinRepeats is the fewest samples a metric may have.
const MinRepeats = 3

// Check fails unless every path has at least MinRepeats samples of every
// metric of Defs, CPU figures (per GB, and per transaction of each pgbench
// script), and (Sluice paths) idle memory figures, or
// an unavailable reason that mayBeUnavailable accepts. It also wants every
// target line computed. It never looks at how fast anything was.
func Check(r *Results, mayBeUnavailable func(p *Path) error) error {
	var errs []error
	if len(r.Paths) == 0 {
		errs = append(errs, errors.New("no paths"))
	}
	for _, p := range r.Paths {
		if p.Unavailable != "" {
			if err := mayBeUnavailable(p); err != nil {
				errs = append(errs, fmt.Errorf("path %s unavailable (%s): %w", p.ID, p.Unavailable, err))
			}
			continue
		}
		for _, d := range Defs {
			if m := p.Metrics[d.ID]; m == nil || len(m.Samples) < MinRepeats {
				errs = append(errs, fmt.Errorf("path %s: %s has %d samples, want %d", p.ID, d.ID, samples(m), MinRepeats))
			}
		}
		errs = append(errs, checkProcs(p, "CPU", p.CPU)...)
		for _, script := range PgScripts {
			errs = append(errs, checkProcs(p, "CPU per transaction of "+script, p.CPUPerTx[script])...)
		}
		if p.IsSluice() {
			errs = append(errs, checkProcs(p, "idle memory", p.Memory)...)
		}
	}
	for _, t := range r.Targets {
		if t.Error != "" && !unavailableTarget(t) {
			errs = append(errs, fmt.Errorf("target %s %q not computed: %s", t.Path, t.What, t.Error))
		}
	}
	if len(r.Targets) == 0 {
		errs = append(errs, errors.New("no targets computed"))
	}
	return errors.Join(errs...)
}

func checkProcs(p *Path, what string, list []*ProcMetric) []error {
	if len(list) == 0 {
		return []error{fmt.Errorf("path %s: no %s figures", p.ID, what)}
	}
	var errs []error
	for _, pm := range list {
		if len(pm.Samples) < MinRepeats {
			errs = append(errs, fmt.Errorf("path %s: %s of %s has %d samples, want %d", p.ID, what, pm.Process, len(pm.Samples), MinRepeats))
		}
	}
	return errs
}

// unavailableTarget tells whether a target could not be computed because a
// path it needs is unavailable (which Check judges on its own).
func unavailableTarget(t Target) bool {
	return strings.HasSuffix(t.Error, " unavailable")
}

func samples(m *Metric) int {
	if m == nil {
		return 0
	}
	return len(m.Samples)
}

// Markers around the results section of a README.
const (
	BeginMarker = "<!-- results:begin -->"
	EndMarker   = "<!-- results:end -->"
)

// ReplaceSection replaces what lies between BeginMarker and EndMarker in the
// file at path with section.
func ReplaceSection(path, section string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("update results section: %w", err)
	}
	s := string(b)
	i := strings.Index(s, BeginMarker)
	j := strings.Index(s, EndMarker)
	if i < 0 || j < i {
		return fmt.Errorf("update results section: %s has no %s ... %s markers", path, BeginMarker, EndMarker)
	}
	out := s[:i+len(BeginMarker)] + "\n" + strings.TrimSpace(section) + "\n" + s[j:]
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		return fmt.Errorf("update results section: %w", err)
	}
	return nil
}
