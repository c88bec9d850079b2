package report

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// Num formats a value for a table with a precision that suits its size.
func Num(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// Cell formats a metric as "median (min–max)".
func Cell(m *Metric) string {
	if m == nil || len(m.Samples) == 0 {
		return "-"
	}
	return fmt.Sprintf("%s (%s–%s)", Num(m.Median), Num(m.Min), Num(m.Max))
}

// grid is a table of cells with a header row.
type grid struct {
	head []string
	rows [][]string
}

// mainGrid has one row per path and one column per metric of Defs.
func mainGrid(r *Results) grid {
	g := grid{head: []string{"path"}}
	for _, d := range Defs {
		g.head = append(g.head, fmt.Sprintf("%s %s", d.Label, d.Unit))
	}
	for _, p := range r.Paths {
		row := []string{p.Title}
		if p.Unavailable != "" {
			row = append(row, "unavailable (see below)")
			for range Defs[1:] {
				row = append(row, "")
			}
		} else {
			for _, d := range Defs {
				row = append(row, Cell(p.Metrics[d.ID]))
			}
		}
		g.rows = append(g.rows, row)
	}
	return g
}

// procGrid has one row per path: each process's figure.
func procGrid(r *Results, title string, list func(*Path) []*ProcMetric) grid {
	g := grid{head: []string{"path", title}}
	for _, p := range r.Paths {
		l := list(p)
		if p.Unavailable != "" || len(l) == 0 {
			continue
		}
		var parts []string
		for _, pm := range l {
			parts = append(parts, fmt.Sprintf("%s %s", pm.Process, Cell(&pm.Metric)))
		}
		title := p.Title
		if p.IdleConns > 0 && l[0].Unit == MemUnit {
			title = fmt.Sprintf("%s (%d held)", p.Title, p.IdleConns)
		}
		g.rows = append(g.rows, []string{title, strings.Join(parts, "; ")})
	}
	return g
}

// targetGrid has one row per target figure and one column per path of
// TargetPaths that is in the run: the measured ratio, "met" or "NOT met".
func targetGrid(r *Results) grid {
	g := grid{head: []string{"target"}}
	var ids []string
	for _, tp := range TargetPaths {
		if r.Path(tp.ID) != nil {
			ids = append(ids, tp.ID)
			g.head = append(g.head, fmt.Sprintf("%s (%s)", tp.ID, tp.Class))
		}
	}
	// The figure's name: its target line without the wanted ratio.
	figure := func(t Target) string {
		what, _, _ := strings.Cut(t.What, " "+t.Op+" ")
		return what
	}
	var figures []string
	cells := map[string]map[string]string{}
	for _, t := range r.Targets {
		f := figure(t)
		if cells[f] == nil {
			figures = append(figures, f)
			cells[f] = map[string]string{}
		}
		_, want, _ := strings.Cut(t.What, " "+t.Op+" ")
		c := fmt.Sprintf("%s (%s %s): ", Num(t.Got), t.Op, want)
		switch {
		case t.Error != "":
			c = "n/a: " + t.Error
		case t.Met:
			c += "met"
		default:
			c += "NOT met"
		}
		cells[f][t.Path] = c
	}
	for _, f := range figures {
		row := []string{f}
		for _, id := range ids {
			row = append(row, cells[f][id])
		}
		g.rows = append(g.rows, row)
	}
	return g
}

// text writes g with aligned columns.
func (g grid) text(w io.Writer) {
	width := make([]int, len(g.head))
	for i, h := range g.head {
		width[i] = len([]rune(h))
	}
	for _, row := range g.rows {
		for i, c := range row {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		for i, c := range cells {
			if i > 0 {
				b.WriteString("  ")
			}
			b.WriteString(c)
			if i < len(cells)-1 {
				b.WriteString(strings.Repeat(" ", width[i]-len([]rune(c))))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	line(g.head)
	sep := make([]string, len(g.head))
	for i := range sep {
		sep[i] = strings.Repeat("-", width[i])
	}
	line(sep)
	for _, row := range g.rows {
		line(row)
	}
}

// markdown writes g as a Markdown table.
func (g grid) markdown(w io.Writer) {
	esc := func(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
	row := func(cells []string) {
		out := make([]string, len(cells))
		for i, c := range cells {
			out[i] = esc(c)
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(out, " | "))
	}
	row(g.head)
	sep := make([]string, len(g.head))
	for i := range sep {
		sep[i] = "---"
	}
	fmt.Fprintf(w, "|%s|\n", strings.Join(sep, "|"))
	for _, r := range g.rows {
		row(r)
	}
}

// grids are the tables of a report with their titles.
func grids(r *Results) []struct {
	title string
	g     grid
} {
	return []struct {
		title string
		g     grid
	}{
		{"Paths (median (min–max) of " + fmt.Sprint(r.Config.Repeats) + " runs)", mainGrid(r)},
		{"CPU seconds per GB moved, per process (single-stream runs)", procGrid(r, "CPU "+CPUUnit, func(p *Path) []*ProcMetric { return p.CPU })},
		{"CPU µs per pgbench select-only (-S) transaction, per process", procGrid(r, "CPU "+CPUTxUnit, func(p *Path) []*ProcMetric { return p.CPUPerTx[PgSelect] })},
		{"CPU µs per pgbench TPC-B-like transaction, per process", procGrid(r, "CPU "+CPUTxUnit, func(p *Path) []*ProcMetric { return p.CPUPerTx[PgTPCB] })},
		{"Memory per idle portal connection (VmRSS while held, minus before)", procGrid(r, "RSS "+MemUnit, func(p *Path) []*ProcMetric { return p.Memory })},
		{"Targets of issue 15 (ratios of medians from this run, against stunnel unless said)", targetGrid(r)},
	}
}

// notes lists why paths were unavailable and other remarks on the run.
func notes(r *Results) []string {
	var out []string
	if len(r.Config.Observers) > 0 {
		out = append(out, "Sluice paths measured with observers running: "+strings.Join(r.Config.Observers, ", "))
	}
	for _, p := range r.Paths {
		if p.Unavailable != "" {
			out = append(out, fmt.Sprintf("%s unavailable: %s", p.Title, p.Unavailable))
		}
	}
	for _, p := range r.Paths {
		if p.IdleNote != "" {
			out = append(out, fmt.Sprintf("%s: %s", p.Title, p.IdleNote))
		}
	}
	return out
}

// WriteText writes every table of the report for a terminal.
func WriteText(w io.Writer, r *Results) {
	for i, t := range grids(r) {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w, t.title)
		t.g.text(w)
		if i == 0 {
			for _, n := range notes(r) {
				fmt.Fprintln(w, "  "+n)
			}
		}
	}
}

// WriteMarkdown writes every table of the report as Markdown.
func WriteMarkdown(w io.Writer, r *Results) {
	for i, t := range grids(r) {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "**%s**\n\n", t.title)
		t.g.markdown(w)
		if i == 0 {
			for _, n := range notes(r) {
				fmt.Fprintf(w, "\n- %s", n)
			}
			if len(notes(r)) > 0 {
				fmt.Fprintln(w)
			}
		}
	}
}
