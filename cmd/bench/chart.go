package main

import (
	"fmt"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// chart draws throughput and p99 latency against concurrency, side by side.
func chart(path string, pipe, transport []row, ceiling float64) error {
	tp := plot.New()
	tp.Title.Text = "Throughput"
	tp.X.Label.Text = "concurrent clients"
	tp.Y.Label.Text = "documents / s (log)"
	lat := plot.New()
	lat.Title.Text = "p99 latency"
	lat.X.Label.Text = "concurrent clients"
	lat.Y.Label.Text = "ms (log)"

	points := func(rows []row, y func(row) float64) plotter.XYs {
		xy := make(plotter.XYs, len(rows))
		for i, r := range rows {
			xy[i].X, xy[i].Y = float64(r.Sample.Clients), y(r)
		}
		return xy
	}
	docs := func(r row) float64 { return r.Sample.DocsPerS }
	p99 := func(r row) float64 { return ms(r.Sample.P99) }
	ceil := plotter.XYs{{X: 1, Y: ceiling}, {X: 64, Y: ceiling}}
	if err := plotutil.AddLinePoints(tp,
		"pipeline, tiny model", points(pipe, docs),
		"transport, 4096-d zero-cost", points(transport, docs),
		"direct Ollama ceiling", ceil); err != nil {
		return err
	}
	if err := plotutil.AddLinePoints(lat,
		"pipeline, tiny model", points(pipe, p99),
		"transport, 4096-d zero-cost", points(transport, p99)); err != nil {
		return err
	}
	// Log scales: the model-bound pipeline and the transport ceiling are two
	// orders of magnitude apart.
	for _, p := range []*plot.Plot{tp, lat} {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.ConstantTicks([]plot.Tick{{Value: 1, Label: "1"}, {Value: 16, Label: "16"}, {Value: 64, Label: "64"}})
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Legend.Top = true
		p.Legend.Left = true
	}
	img := vgimg.New(vg.Points(960), vg.Points(400))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Points(20), PadY: vg.Points(10), PadLeft: vg.Points(10), PadRight: vg.Points(10), PadTop: vg.Points(10), PadBottom: vg.Points(10)}
	plots := [][]*plot.Plot{{tp, lat}}
	canvases := plot.Align(plots, tiles, dc)
	tp.Draw(canvases[0][0])
	lat.Draw(canvases[0][1])
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		return fmt.Errorf("write chart: %w", err)
	}
	return nil
}
