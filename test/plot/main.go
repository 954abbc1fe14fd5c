// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Command plot draws the pictures of make demo and make bench as PNG files
// (gonum/plot), from CSV files of numbers:
//
//	plot timeline -out F.png -title T [-mark LABEL=UNIX_MS ...] SAMPLES.csv
//	    each reply's latency over time (unix_ms,latency_ms), with vertical marks
//	plot cdf -out F.png -title T NAME=SAMPLES.csv ...
//	    the latency distribution of each file (unix_ms,latency_ms), log scale
//	plot epochs -out F.png -title T EPOCHS.csv
//	    per checkpoint: epoch,pause_ms,ack_ms
package main

import (
	"flag"
	"fmt"
	"image/color"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

type marks []string

func (m *marks) String() string     { return strings.Join(*m, ",") }
func (m *marks) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: plot timeline|cdf|epochs -out F.png -title T FILES")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("plot "+os.Args[1], flag.ExitOnError)
	out := fs.String("out", "", "PNG file to write")
	title := fs.String("title", "", "title of the picture")
	var ms marks
	fs.Var(&ms, "mark", "timeline: LABEL=UNIX_MS, a vertical line (repeat)")
	_ = fs.Parse(os.Args[2:]) // ExitOnError: a bad flag exits
	if *out == "" || fs.NArg() == 0 {
		fs.Usage()
		os.Exit(2)
	}
	var p *plot.Plot
	var err error
	switch os.Args[1] {
	case "timeline":
		p, err = timeline(fs.Arg(0), ms)
	case "cdf":
		p, err = cdf(fs.Args())
	case "epochs":
		p, err = epochs(fs.Arg(0))
	default:
		err = fmt.Errorf("unknown picture %q", os.Args[1])
	}
	if err == nil {
		p.Title.Text = *title
		err = p.Save(8*vg.Inch, 4*vg.Inch, *out)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
}

func readFile(path string, n int) ([][]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cols, err := readColumns(f, n)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(cols[0]) == 0 {
		return nil, fmt.Errorf("%s: no samples", path)
	}
	return cols, nil
}

// timeline: latency of each reply against the seconds since the first.
func timeline(path string, ms marks) (*plot.Plot, error) {
	cols, err := readFile(path, 2)
	if err != nil {
		return nil, err
	}
	t0 := slices.Min(cols[0])
	pts := make(plotter.XYs, len(cols[0]))
	for i := range pts {
		pts[i] = plotter.XY{X: (cols[0][i] - t0) / 1000, Y: cols[1][i]}
	}
	p := plot.New()
	p.X.Label.Text = "seconds"
	p.Y.Label.Text = "reply latency (ms)"
	sc, err := plotter.NewScatter(pts)
	if err != nil {
		return nil, err
	}
	sc.GlyphStyle.Radius = vg.Points(1.5)
	sc.GlyphStyle.Shape = draw.CircleGlyph{}
	p.Add(sc, plotter.NewGrid())
	p.Legend.Add("replies", sc)
	top := slices.Max(cols[1]) * 1.05
	for i, m := range ms {
		label, at, ok := strings.Cut(m, "=")
		v, perr := strconv.ParseFloat(at, 64)
		if !ok || perr != nil {
			return nil, fmt.Errorf("-mark %q: want LABEL=UNIX_MS", m)
		}
		x := (v - t0) / 1000
		l, err := plotter.NewLine(plotter.XYs{{X: x, Y: 0}, {X: x, Y: top}})
		if err != nil {
			return nil, err
		}
		l.Color = plotutil.Color(i + 1)
		l.Dashes = plotutil.Dashes(i + 1)
		p.Add(l)
		p.Legend.Add(label, l)
	}
	p.Legend.Top = true
	return p, nil
}

// cdf: the fraction of requests answered within each latency.
func cdf(specs []string) (*plot.Plot, error) {
	p := plot.New()
	p.X.Label.Text = "latency (ms, log scale)"
	p.Y.Label.Text = "fraction of requests"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Add(plotter.NewGrid())
	for i, s := range specs {
		name, path, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want NAME=FILE", s)
		}
		cols, err := readFile(path, 2)
		if err != nil {
			return nil, err
		}
		l, err := plotter.NewLine(cdfPoints(cols[1]))
		if err != nil {
			return nil, err
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(name, l)
	}
	p.Legend.Left, p.Legend.Top = true, true
	return p, nil
}

// cdfPoints are at most 500 points of the distribution of vals (> 0, for
// the log scale).
func cdfPoints(vals []float64) plotter.XYs {
	v := slices.Clone(vals)
	slices.Sort(v)
	step := max(1, len(v)/500)
	var pts plotter.XYs
	for i := 0; i < len(v); i += step {
		pts = append(pts, plotter.XY{X: math.Max(v[i], 0.001), Y: float64(i+1) / float64(len(v))})
	}
	if last := len(v) - 1; len(pts) == 0 || pts[len(pts)-1].Y < 1 {
		pts = append(pts, plotter.XY{X: math.Max(v[last], 0.001), Y: 1})
	}
	return pts
}

// epochs: pause and acknowledgement of each checkpoint.
func epochs(path string) (*plot.Plot, error) {
	cols, err := readFile(path, 3)
	if err != nil {
		return nil, err
	}
	p := plot.New()
	p.X.Label.Text = "epoch"
	p.Y.Label.Text = "ms"
	p.Add(plotter.NewGrid())
	for i, name := range []string{"pause (frozen)", "checkpoint taken → acknowledged"} {
		pts := make(plotter.XYs, len(cols[0]))
		for j := range pts {
			pts[j] = plotter.XY{X: cols[0][j], Y: cols[i+1][j]}
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return nil, err
		}
		l.Color = []color.Color{plotutil.Color(0), plotutil.Color(1)}[i]
		p.Add(l)
		p.Legend.Add(name, l)
	}
	p.Legend.Top = true
	return p, nil
}
