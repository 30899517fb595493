package metrics

import "github.com/prometheus/client_golang/prometheus"

// IndexStats reports the search index at scrape time: the rows it holds,
// those with a vector of another model than the workers serve (left out
// of searches), and how long its first load took (0 while loading).
type IndexStats func() (rows, stale int, loadSeconds float64)

// RegisterSearchIndex registers the search index's series on reg.
func RegisterSearchIndex(reg prometheus.Registerer, stats IndexStats) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: ns, Subsystem: "search", Name: "index_rows",
		Help: "Rows with a vector in the search index.",
	}, func() float64 { n, _, _ := stats(); return float64(n) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: ns, Subsystem: "search", Name: "index_stale_rows",
		Help: "Indexed rows whose vector is of another model than the workers serve; searches leave them out until re-embedded.",
	}, func() float64 { _, n, _ := stats(); return float64(n) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: ns, Subsystem: "search", Name: "index_load_seconds",
		Help: "How long the search index's first load from WAYWO_DB took; 0 while it loads.",
	}, func() float64 { _, _, s := stats(); return s }))
}
