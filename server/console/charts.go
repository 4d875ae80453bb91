package console

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"sort"
	"strings"
	"time"
)

// Charts are inline SVG drawn here: no script, and readable without one.
// Each carries a title and a description for assistive technologies, and
// the page gives its figures as a table too.

// palette is the series colours: distinguishable, and dark enough on
// white for text (WCAG contrast 4.5:1).
var palette = []string{"#1f5fa8", "#a3471b", "#2e7031", "#6a3d9a", "#8a6d00", "#0e6f74"}

type series struct {
	Name   string
	Values []float64
}

// barChart draws grouped bars: one group per label, one bar per series.
func barChart(id, title, desc, yLabel string, labels []string, ss []series, format func(float64) string) template.HTML {
	const w, h, left, bottom, top = 720, 260, 56, 44, 16
	plotW, plotH := float64(w-left-16), float64(h-bottom-top)
	maxV := 0.0
	for _, s := range ss {
		for _, v := range s.Values {
			maxV = math.Max(maxV, v)
		}
	}
	// At least 4: the 4 grid steps of a count are whole numbers.
	maxV = 4 * math.Ceil(niceCeil(max(maxV, 4))/4)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-labelledby="%s-t %s-d" xmlns="http://www.w3.org/2000/svg">`, w, h, id, id)
	fmt.Fprintf(&b, `<title id="%s-t">%s</title><desc id="%s-d">%s</desc>`, id, html.EscapeString(title), id, html.EscapeString(desc))
	// Axes and grid.
	for i := 0; i <= 4; i++ {
		y := top + plotH - plotH*float64(i)/4
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#d0d0d0" stroke-width="1"/>`, left, y, w-16, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" font-size="11" fill="#333">%s</text>`, left-6, y+4, html.EscapeString(format(maxV*float64(i)/4)))
	}
	fmt.Fprintf(&b, `<text x="12" y="%d" font-size="11" fill="#333" transform="rotate(-90 12 %d)" text-anchor="middle">%s</text>`, top+int(plotH/2), top+int(plotH/2), html.EscapeString(yLabel))
	n := max(len(labels), 1)
	groupW := plotW / float64(n)
	barW := groupW * 0.8 / float64(max(len(ss), 1))
	step := max(1, n/12) // at most 12 labels
	for i, l := range labels {
		x0 := float64(left) + groupW*float64(i) + groupW*0.1
		for j, s := range ss {
			v := 0.0
			if i < len(s.Values) {
				v = s.Values[i]
			}
			bh := plotH * v / maxV
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s, %s: %s</title></rect>`,
				x0+barW*float64(j), float64(top)+plotH-bh, math.Max(barW-1, 1), bh, palette[j%len(palette)],
				html.EscapeString(s.Name), html.EscapeString(l), html.EscapeString(format(v)))
		}
		if i%step == 0 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" font-size="11" fill="#333">%s</text>`, x0+groupW*0.4, h-bottom+16, html.EscapeString(l))
		}
	}
	legend(&b, ss, left, h-10)
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// lineChart draws series over the same x positions, values from 0 to 1.
func lineChart(id, title, desc string, points int, ss []series) template.HTML {
	const w, h, left, bottom, top = 720, 240, 56, 40, 16
	plotW, plotH := float64(w-left-16), float64(h-bottom-top)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-labelledby="%s-t %s-d" xmlns="http://www.w3.org/2000/svg">`, w, h, id, id)
	fmt.Fprintf(&b, `<title id="%s-t">%s</title><desc id="%s-d">%s</desc>`, id, html.EscapeString(title), id, html.EscapeString(desc))
	for i := 0; i <= 4; i++ {
		y := top + plotH - plotH*float64(i)/4
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#d0d0d0" stroke-width="1"/>`, left, y, w-16, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" font-size="11" fill="#333">%d%%</text>`, left-6, y+4, i*25)
	}
	dx := plotW / float64(max(points-1, 1))
	for j, s := range ss {
		if len(s.Values) == 0 {
			continue
		}
		var pts []string
		off := points - len(s.Values)
		for i, v := range s.Values {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", float64(left)+dx*float64(off+i), float64(top)+plotH-plotH*math.Min(v, 1)))
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`, strings.Join(pts, " "), palette[j%len(palette)])
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" fill="#333">older</text><text x="%d" y="%d" text-anchor="end" font-size="11" fill="#333">now</text>`,
		left, h-bottom+16, w-16, h-bottom+16)
	legend(&b, ss, left, h-8)
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func legend(b *strings.Builder, ss []series, x, y int) {
	for j, s := range ss {
		fmt.Fprintf(b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d" font-size="12" fill="#222">%s</text>`,
			x, y-9, palette[j%len(palette)], x+14, y, html.EscapeString(s.Name))
		x += 24 + 8*len(s.Name)
	}
}

func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// latencyBuckets are the histogram's upper bounds, in milliseconds.
var latencyBuckets = []float64{5, 10, 20, 50, 100, 200, 500, 1000, 2000, math.Inf(1)}

func bucketLabel(i int) string {
	if math.IsInf(latencyBuckets[i], 1) {
		return fmt.Sprintf("> %g s", latencyBuckets[i-1]/1000)
	}
	if latencyBuckets[i] >= 1000 {
		return fmt.Sprintf("≤ %g s", latencyBuckets[i]/1000)
	}
	return fmt.Sprintf("≤ %g ms", latencyBuckets[i])
}

// chartData is what the charts page draws, from owner's audit records.
type chartData struct {
	Hours     []string         // the last 24 hours, UTC, oldest first
	PerHour   map[string][]int // signatures by card, per hour
	Cards     []string
	Latency   []int // signatures per latency bucket
	Signed    int
	TotalHour map[string]int
}

func isSignature(op string) bool { return op == "sign" || op == "sign-document" }

func newChartData(now time.Time) *chartData {
	cd := &chartData{PerHour: map[string][]int{}, Latency: make([]int, len(latencyBuckets)), TotalHour: map[string]int{}}
	start := now.UTC().Truncate(time.Hour).Add(-23 * time.Hour)
	for i := range 24 {
		cd.Hours = append(cd.Hours, start.Add(time.Duration(i)*time.Hour).Format("15h"))
	}
	return cd
}

// add counts an allowed signature.
func (cd *chartData) add(w row, now time.Time) {
	if w.Decision != 0 || !isSignature(w.Op) {
		return
	}
	start := now.UTC().Truncate(time.Hour).Add(-23 * time.Hour)
	i := int(w.t.Sub(start) / time.Hour)
	if w.t.Before(start) || i >= 24 {
		return
	}
	card := w.Card
	if card == "" {
		card = "(unknown)"
	}
	if _, ok := cd.PerHour[card]; !ok {
		cd.PerHour[card] = make([]int, 24)
		cd.Cards = append(cd.Cards, card)
		sort.Strings(cd.Cards)
	}
	cd.PerHour[card][i]++
	cd.TotalHour[card]++
	ms := float64(w.TookUS) / 1000
	for j, ub := range latencyBuckets {
		if ms <= ub {
			cd.Latency[j]++
			break
		}
	}
	cd.Signed++
}
