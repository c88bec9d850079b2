package report

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// Chart geometry.
const (
	svgCols    = 2
	panelW     = 500
	labelW     = 140
	valueW     = 150
	rowH       = 20
	panelHead  = 34
	panelFoot  = 14
	chartHead  = 56
	barColor   = "#4e79a7"
	sluiceCol  = "#e15759"
	whiskerCol = "#222"
)

// panel is one metric's bars: a value (median) and a range per path.
type panel struct {
	title  string
	higher bool
	rows   []bar
}

type bar struct {
	label    string
	sluice   bool
	na       string // why there is no value
	med      float64
	min, max float64
}

func metricPanel(r *Results, d Def) panel {
	better := "lower is better"
	if d.Higher {
		better = "higher is better"
	}
	p := panel{title: fmt.Sprintf("%s (%s; %s)", d.Label, d.Unit, better), higher: d.Higher}
	for _, path := range r.Paths {
		b := bar{label: path.ID, sluice: path.IsSluice()}
		m := path.Metrics[d.ID]
		switch {
		case path.Unavailable != "":
			b.na = "unavailable"
		case m == nil || len(m.Samples) == 0:
			b.na = "no samples"
		default:
			b.med, b.min, b.max = m.Median, m.Min, m.Max
		}
		p.rows = append(p.rows, b)
	}
	return p
}

// procPanel has one bar per process of the Sluice paths (and, for CPU, of
// every path): which process pays.
func procPanel(r *Results, title string, list func(*Path) []*ProcMetric, sluiceOnly bool) panel {
	p := panel{title: title}
	for _, path := range r.Paths {
		if path.Unavailable != "" || (sluiceOnly && !path.IsSluice()) {
			continue
		}
		for _, pm := range list(path) {
			p.rows = append(p.rows, bar{label: path.ID + ": " + pm.Process, sluice: path.IsSluice(),
				med: pm.Median, min: pm.Min, max: pm.Max})
		}
	}
	return p
}

func (p panel) height() int { return panelHead + len(p.rows)*rowH + panelFoot }

// WriteSVG draws one panel per metric, a horizontal bar per path (its
// median) with a whisker for the range, Sluice's paths in another colour.
func WriteSVG(w io.Writer, r *Results) error {
	panels := []panel{}
	for _, d := range Defs {
		panels = append(panels, metricPanel(r, d))
	}
	panels = append(panels,
		procPanel(r, "CPU per GB moved, per process ("+CPUUnit+"; lower is better)", func(p *Path) []*ProcMetric { return p.CPU }, true),
		procPanel(r, "Agent RSS per idle connection ("+MemUnit+"; lower is better)", func(p *Path) []*ProcMetric { return p.Memory }, true))
	// Lay the panels out in columns, row by row.
	var rowTops []int
	height := chartHead
	for i := 0; i < len(panels); i += svgCols {
		rowTops = append(rowTops, height)
		h := 0
		for j := i; j < i+svgCols && j < len(panels); j++ {
			h = max(h, panels[j].height())
		}
		height += h
	}
	width := svgCols * panelW
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n",
		width, height+10, width, height+10)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="22" font-size="16" font-weight="bold">%s</text>`+"\n",
		esc("Sluice benchmark: app container → service container, "+fmt.Sprint(r.Config.Repeats)+" runs each"))
	fmt.Fprintf(&b, `<text x="10" y="42" fill="#555">%s</text>`+"\n",
		esc(fmt.Sprintf("%s · %d CPUs, %s · kernel %s · bar: median, whisker: min–max · red: Sluice", r.Date, r.Machine.NProc, r.Machine.CPU, r.Machine.Kernel)))
	for i, p := range panels {
		x := (i % svgCols) * panelW
		y := rowTops[i/svgCols]
		p.draw(&b, x, y)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	if err != nil {
		return fmt.Errorf("write svg: %w", err)
	}
	return nil
}

func (p panel) draw(b *strings.Builder, x, y int) {
	fmt.Fprintf(b, `<g transform="translate(%d,%d)">`+"\n", x, y)
	fmt.Fprintf(b, `<text x="10" y="18" font-size="12" font-weight="bold">%s</text>`+"\n", esc(p.title))
	scale := 0.0
	for _, r := range p.rows {
		if r.na == "" {
			scale = math.Max(scale, r.max)
		}
	}
	barW := float64(panelW - labelW - valueW - 20)
	px := func(v float64) float64 {
		if scale == 0 {
			return 0
		}
		return v / scale * barW
	}
	x0 := float64(labelW + 10)
	for i, r := range p.rows {
		ry := panelHead + i*rowH
		fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", labelW+4, ry+13, esc(shorten(r.label, 24)))
		if r.na != "" {
			fmt.Fprintf(b, `<text x="%.1f" y="%d" fill="#888">%s</text>`+"\n", x0+4, ry+13, esc(r.na))
			continue
		}
		col := barColor
		if r.sluice {
			col = sluiceCol
		}
		fmt.Fprintf(b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", x0, ry+3, math.Max(px(r.med), 1), rowH-6, col)
		// The whisker: min to max, with end ticks.
		lo, hi, mid := x0+px(r.min), x0+px(r.max), float64(ry)+rowH/2
		fmt.Fprintf(b, `<path d="M%.1f %.1fH%.1fM%.1f %.1fV%.1fM%.1f %.1fV%.1f" stroke="%s" fill="none"/>`+"\n",
			lo, mid, hi, lo, mid-4, mid+4, hi, mid-4, mid+4, whiskerCol)
		fmt.Fprintf(b, `<text x="%.1f" y="%d">%s</text>`+"\n", x0+barW+6, ry+13, esc(fmt.Sprintf("%s (%s–%s)", Num(r.med), Num(r.min), Num(r.max))))
	}
	b.WriteString("</g>\n")
}

func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func esc(s string) string { return html.EscapeString(s) }
