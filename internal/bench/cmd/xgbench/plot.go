package main

import (
	"fmt"
	"html"
	"strings"

	"github.com/xdpguard/xdpguard/internal/bench/progs"
)

// Plot geometry, in SVG user units (pixels at 100%).
const (
	plotWidth   = 860
	labelWidth  = 250 // frame names on the left
	barHeight   = 14
	barGap      = 3  // between a frame's bars
	groupGap    = 16 // between frames
	plotTop     = 50 // title and legend
	plotBottom  = 40 // axis labels
	valueMargin = 60 // room right of the longest bar for its value
)

// series are the bars of each frame, in drawing order, with their colours.
var series = []struct{ prog, colour string }{
	{progs.Floor, "#9e9e9e"},
	{progs.Xdpguard, "#2e7d32"},
	{progs.XDPFilter, "#ef6c00"},
}

// plotSVG draws the per-packet medians as grouped horizontal bars, one
// group per frame, with the interquartile range as a whisker.
func plotSVG(r *report) string {
	var maxNs float64
	for _, s := range series {
		for _, f := range r.frames {
			maxNs = max(maxNs, r.perPacket.Cells[s.prog][f.Name].P75)
		}
	}
	maxNs = niceCeil(maxNs)
	groupH := len(series)*(barHeight+barGap) - barGap + groupGap
	height := plotTop + len(r.frames)*groupH + plotBottom
	scale := float64(plotWidth-labelWidth-valueMargin) / maxNs
	x := func(ns float64) float64 { return labelWidth + ns*scale }

	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", plotWidth, height)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p(`<text x="10" y="20" font-size="15" font-weight="bold">Per-packet cost, BPF_PROG_TEST_RUN, median ns (whisker: interquartile range)</text>` + "\n")
	for i, s := range series {
		lx := labelWidth + i*150
		p(`<rect x="%d" y="30" width="12" height="12" fill="%s"/><text x="%d" y="40">%s</text>`+"\n", lx, s.colour, lx+16, s.prog)
	}
	// Grid lines every tick.
	tick := maxNs / 5
	axisY := plotTop + len(r.frames)*groupH
	for v := 0.0; v <= maxNs+tick/2; v += tick {
		p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e0e0e0"/>`+"\n", x(v), plotTop-4, x(v), axisY)
		p(`<text x="%.1f" y="%d" text-anchor="middle">%.0f</text>`+"\n", x(v), axisY+16, v)
	}
	p(`<text x="%.1f" y="%d" text-anchor="middle">ns per frame</text>`+"\n", x(maxNs/2), axisY+34)
	for i, f := range r.frames {
		y0 := plotTop + i*groupH
		p(`<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", labelWidth-8, y0+len(series)*(barHeight+barGap)/2+4, html.EscapeString(f.Name))
		for j, s := range series {
			c := r.perPacket.Cells[s.prog][f.Name]
			y := y0 + j*(barHeight+barGap)
			p(`<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", labelWidth, y, c.MedianNs*scale, barHeight, s.colour)
			mid := y + barHeight/2
			p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black"/>`+"\n", x(c.P25), mid, x(c.P75), mid)
			p(`<text x="%.1f" y="%d">%.1f</text>`+"\n", x(max(c.MedianNs, c.P75))+4, mid+4, c.MedianNs)
		}
	}
	p("</svg>\n")
	return b.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten, for axis ticks.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	pow := 1.0
	for pow*10 <= v {
		pow *= 10
	}
	for pow > v {
		pow /= 10
	}
	for _, m := range []float64{1, 2, 5, 10} {
		if m*pow >= v {
			return m * pow
		}
	}
	return 10 * pow
}
