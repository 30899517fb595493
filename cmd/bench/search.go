// The search group: the api's index against sqlite-vector, the backend's
// search today, over the same generated WAYWO file, side by side.

package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/mattn/go-sqlite3"
	"go.uber.org/zap"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/waywo/embed/embedclient"
	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/proctest"
	"github.com/waywo/embed/internal/projectsync"
	"github.com/waywo/embed/internal/search"
	"github.com/waywo/embed/internal/search/searchtest"
	"github.com/waywo/embed/internal/vector"
)

// sqliteVectorVersion is the anchor the issue names; installed with npm
// into the cache for the benchmark only, never a dependency.
const sqliteVectorVersion = "0.9.95"

const (
	searchK       = 10
	searchQueries = 20
	searchModel   = "generated"
)

// searchRun is what one table size measured.
type searchRun struct {
	rows                      int
	ours, full, quant         sample
	oursRecall, fullRecall    float64
	oursFirst, oursRest       time.Duration // the first query after the load; the slowest after it
	quantRecall               float64
	quantOK                   bool
	loadSeconds, quantSeconds float64
	bytesPerRow               float64
}

func (b *bench) search() error {
	ext, err := sqliteVector()
	if err != nil {
		return err
	}
	if err := loadLibm(); err != nil {
		return err
	}
	fmt.Printf("search: the api's index against sqlite-vector %s (%s), %d queries, k=%d, 4096-d\n", sqliteVectorVersion, ext, searchQueries, searchK)
	empty, err := b.apiIndexRSS(0)
	if err != nil {
		return err
	}
	for _, n := range []int{20_000, 100_000} {
		r, err := b.searchAt(n, ext, empty)
		if err != nil {
			return err
		}
		b.searches = append(b.searches, r)
	}
	return searchChart(filepath.Join(filepath.Dir(b.work), "search.png"), b.searches)
}

// searchChart draws each method's p50 against the table's size, on a log
// scale: the full scan is two orders of magnitude above the index.
func searchChart(path string, runs []searchRun) error {
	p := plot.New()
	p.Title.Text = "Search p50, one query already embedded (k=10, 4096-d)"
	p.X.Label.Text = "rows in waywo_projects"
	p.Y.Label.Text = "p50, ms (log scale)"
	p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	line := func(p50 func(searchRun) time.Duration) plotter.XYs {
		var xy plotter.XYs
		for _, r := range runs {
			if d := p50(r); d > 0 {
				xy = append(xy, plotter.XY{X: float64(r.rows), Y: ms(d)})
			}
		}
		return xy
	}
	if err := plotutil.AddLinePoints(p,
		"api index (sign bits + exact rescoring)", line(func(r searchRun) time.Duration { return r.ours.P50 }),
		"sqlite-vector vector_quantize_scan", line(func(r searchRun) time.Duration { return r.quant.P50 }),
		"sqlite-vector vector_full_scan", line(func(r searchRun) time.Duration { return r.full.P50 }),
	); err != nil {
		return err
	}
	p.Legend.Top, p.Legend.Left = true, true
	return p.Save(7*vg.Inch, 4*vg.Inch, path)
}

// sqliteVector installs sqlite-vector's Linux x86-64 build with npm into
// the cache (once) and returns the path of its vector.so.
func sqliteVector() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "waywo-embed", "sqlite-vector-"+sqliteVectorVersion)
	so := filepath.Join(dir, "node_modules", "@sqliteai", "sqlite-vector-linux-x86_64", "vector.so")
	if _, err := os.Stat(so); err == nil {
		return so, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	cmd := exec.Command("npm", "install", "--no-save", "--no-audit", "--no-fund", "--prefix", dir,
		"@sqliteai/sqlite-vector-linux-x86_64@"+sqliteVectorVersion)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm install sqlite-vector: %v\n%s", err, out)
	}
	return so, nil
}

var registerVector sync.Once

// openVector opens path on one connection with sqlite-vector loaded and
// initialised on the WAYWO column, as the backend's search does.
func openVector(ctx context.Context, path, ext string) (*sql.DB, error) {
	registerVector.Do(func() {
		sql.Register("sqlite3_vector", &sqlite3.SQLiteDriver{Extensions: []string{ext}})
	})
	vdb, err := sql.Open("sqlite3_vector", "file:"+path+"?_busy_timeout=10000")
	if err != nil {
		return nil, err
	}
	vdb.SetMaxOpenConns(1) // vector_init's context lives on its connection
	if _, err := vdb.ExecContext(ctx, `SELECT vector_init('waywo_projects', 'description_embedding', 'type=FLOAT32,dimension=4096,distance=COSINE')`); err != nil {
		vdb.Close()
		return nil, fmt.Errorf("vector_init: %w", err)
	}
	return vdb, nil
}

// vectorScan is one sqlite-vector search: the ids of the k nearest rows.
func vectorScan(ctx context.Context, vdb *sql.DB, fn string, q []float32, k int) ([]int64, error) {
	rows, err := vdb.QueryContext(ctx, fmt.Sprintf(`SELECT rowid FROM %s('waywo_projects', 'description_embedding', ?, %d)`, fn, k), vector.Append(nil, q))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

func (b *bench) searchAt(n int, ext string, emptyRSS float64) (searchRun, error) {
	ctx := b.ctx
	run := searchRun{rows: n}
	path := filepath.Join(b.work, fmt.Sprintf("search-%d.db", n))
	for _, suffix := range []string{"", "-wal", "-shm"} {
		_ = os.Remove(path + suffix)
	}
	start := time.Now()
	d := searchtest.NewData(bigDims, 40, 1)
	if _, err := searchtest.Fill(ctx, path, d, n); err != nil {
		return run, err
	}
	if err := markSynced(ctx, path); err != nil {
		return run, err
	}
	qs := make([][]float32, searchQueries)
	for i := range qs {
		qs[i] = d.Query()
	}
	exact, err := searchtest.ExactMany(ctx, path, qs, searchK, false, searchtest.Digest, 0)
	if err != nil {
		return run, err
	}
	fmt.Printf("  %d rows written and their exact answers computed in %.0f s\n", n, time.Since(start).Seconds())

	// Ours, in this process: the index loaded from the file, then every
	// query three times.
	store, err := db.Open(ctx, path, zap.NewNop())
	if err != nil {
		return run, err
	}
	defer store.Close()
	x := search.New(bigDims)
	start = time.Now()
	if _, err := x.Refresh(ctx, store, zap.NewNop()); err != nil {
		return run, err
	}
	run.loadSeconds = time.Since(start).Seconds()
	var lat []time.Duration
	for round := range 3 {
		for j, q := range qs {
			t := time.Now()
			res, err := x.Search(ctx, store, search.Query{Vector: q, K: searchK, Digest: searchtest.Digest})
			if err != nil {
				return run, err
			}
			lat = append(lat, time.Since(t))
			if round == 0 {
				run.oursRecall += recallOf(res.Hits, exact[j]) / searchQueries
			}
		}
	}
	run.ours = latencies(lat)
	run.oursFirst, run.oursRest = lat[0], slices.Max(lat[1:])

	// sqlite-vector's full scan (the backend's), then its quantized scan.
	vdb, err := openVector(ctx, path, ext)
	if err != nil {
		return run, err
	}
	defer vdb.Close()
	fullQueries := max(3, searchQueries*20_000/n/2) // a full scan of 100,000 rows takes seconds
	lat = lat[:0]
	for j, q := range qs[:fullQueries] {
		t := time.Now()
		ids, err := vectorScan(ctx, vdb, "vector_full_scan", q, searchK)
		if err != nil {
			return run, fmt.Errorf("vector_full_scan: %w", err)
		}
		lat = append(lat, time.Since(t))
		run.fullRecall += searchtest.Recall(ids, exact[j]) / float64(fullQueries)
	}
	run.full = latencies(lat)
	start = time.Now()
	_, qerr := vdb.ExecContext(ctx, `SELECT vector_quantize('waywo_projects', 'description_embedding')`)
	if qerr == nil {
		_, qerr = vdb.ExecContext(ctx, `SELECT vector_quantize_preload('waywo_projects', 'description_embedding')`)
	}
	run.quantSeconds = time.Since(start).Seconds()
	if qerr != nil {
		b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("sqlite-vector's quantized scan did not run at %d rows: %v", n, qerr))
	} else {
		run.quantOK = true
		lat = lat[:0]
		for round := range 3 {
			for j, q := range qs {
				t := time.Now()
				ids, err := vectorScan(ctx, vdb, "vector_quantize_scan", q, searchK)
				if err != nil {
					return run, fmt.Errorf("vector_quantize_scan: %w", err)
				}
				lat = append(lat, time.Since(t))
				if round == 0 {
					run.quantRecall += searchtest.Recall(ids, exact[j]) / searchQueries
				}
			}
		}
		run.quant = latencies(lat)
	}

	rss, err := b.apiIndexRSS(n)
	if err != nil {
		return run, err
	}
	run.bytesPerRow = (rss - emptyRSS) * (1 << 20) / float64(n)

	label := fmt.Sprintf("%d rows", n)
	// Ratio: sqlite-vector's full scan p50 over this row's.
	b.add(row{Group: "search", Scenario: label + ": api index (sign bits + exact rescoring)", Sample: run.ours, Ratio: ratio(run.full.P50, run.ours.P50)})
	b.add(row{Group: "search", Scenario: label + ": sqlite-vector vector_full_scan", Sample: run.full, Ratio: 1})
	if run.quantOK {
		b.add(row{Group: "search", Scenario: label + ": sqlite-vector vector_quantize_scan", Sample: run.quant, Ratio: ratio(run.full.P50, run.quant.P50)})
	}
	fmt.Printf("  %d rows: recall@%d ours %.3f, full scan %.3f, quantized %.3f; p50 full scan / ours %.0f×; index load %.1f s; quantize+preload %.1f s; api RSS +%.0f bytes per row; ours: first query %.1f ms, slowest after it %.1f ms\n",
		n, searchK, run.oursRecall, run.fullRecall, run.quantRecall, ratio(run.full.P50, run.ours.P50), run.loadSeconds, run.quantSeconds, run.bytesPerRow, ms(run.oursFirst), ms(run.oursRest))
	key := strconv.Itoa(n)
	b.rep.Extra["search_"+key+"_load_s"] = run.loadSeconds
	b.rep.Extra["search_"+key+"_api_bytes_per_row"] = run.bytesPerRow
	b.rep.Extra["search_"+key+"_full_over_ours_p50"] = ratio(run.full.P50, run.ours.P50)
	b.rep.Extra["search_"+key+"_recall_ours"] = run.oursRecall
	b.rep.Extra["search_"+key+"_recall_full_scan"] = run.fullRecall
	if run.quantOK {
		b.rep.Extra["search_"+key+"_recall_quantized"] = run.quantRecall
		b.rep.Extra["search_"+key+"_quantize_s"] = run.quantSeconds
	}
	return run, nil
}

// markSynced records every generated row as the sync would have embedded
// it (its content key and the model's name), so that an api opening the
// file finds nothing stale and queues nothing.
func markSynced(ctx context.Context, path string) error {
	raw, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
	if err != nil {
		return err
	}
	defer raw.Close()
	rows, err := raw.QueryContext(ctx, `SELECT id, title, description, hashtags FROM waywo_projects`)
	if err != nil {
		return err
	}
	keys := map[int64]string{}
	for rows.Next() {
		var p db.Project
		if err := rows.Scan(&p.ID, &p.Title, &p.Description, &p.Hashtags); err != nil {
			rows.Close()
			return err
		}
		keys[p.ID] = projectsync.ContentKey(p, 0)
	}
	rows.Close()
	tx, err := raw.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	for id, key := range keys {
		if _, err := tx.ExecContext(ctx, `UPDATE embed_sync_state SET content_hash = ?, model = ? WHERE project_id = ?`, key, searchModel, id); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// apiIndexRSS starts the api over the generated file of n rows (0: an
// empty one), without workers, and reads its resident memory once its
// search index is loaded.
func (b *bench) apiIndexRSS(n int) (float64, error) {
	ctx := b.ctx
	httpAddr, err := proctest.FreeAddr()
	if err != nil {
		return 0, err
	}
	natsAddr, err := proctest.FreeAddr()
	if err != nil {
		return 0, err
	}
	dataDir := mkdir(b.work, "search-data-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	path := filepath.Join(b.work, fmt.Sprintf("search-%d.db", n))
	if n == 0 {
		path = filepath.Join(dataDir, "waywo.db")
	}
	api, err := startProc(b.work, "api", fmt.Sprintf("search-%d-api", n), proctest.With(map[string]string{
		"EMBED_HTTP_ADDR": httpAddr, "EMBED_NATS_ADDR": natsAddr, "EMBED_WORKER": "off", "EMBED_DATA_DIR": dataDir,
		"WAYWO_DB": path, "EMBED_MODEL": searchModel, "EMBED_DIMENSIONS": strconv.Itoa(bigDims), "EMBED_LOG_LEVEL": "warn",
		"EMBED_RECONCILE_INTERVAL": "0",
	}, proctest.NewRoles().Embedded()))
	if err != nil {
		return 0, err
	}
	defer api.Stop(20 * time.Second)
	base := "http://" + httpAddr
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var st embedclient.SyncStatus
		if resp, err := http.Get(base + "/projects/sync-status"); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		if st.Search != nil && st.Search.State == "ready" && st.Search.Rows == n {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the api's search index never loaded %d rows:\n%s", n, api.Tail(2000))
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	// Settled: what a scrape or two later still holds.
	select {
	case <-ctx.Done():
	case <-time.After(3 * time.Second):
	}
	return api.Usage().RSSMB, nil
}

func recallOf(hits []search.Hit, want []searchtest.Hit) float64 {
	ids := make([]int64, len(hits))
	for i, h := range hits {
		ids[i] = h.ID
	}
	return searchtest.Recall(ids, want)
}

// latencies is a sample of one-at-a-time searches: queries per second and
// percentiles.
func latencies(lat []time.Duration) sample {
	var total time.Duration
	for _, l := range lat {
		total += l
	}
	s := sample{Clients: 1, Requests: len(lat), Docs: len(lat), Elapsed: total}
	if total > 0 {
		s.DocsPerS = float64(len(lat)) / total.Seconds()
	}
	sorted := slices.Clone(lat)
	slices.Sort(sorted)
	s.P50, s.P95, s.P99 = pct(sorted, 50), pct(sorted, 95), pct(sorted, 99)
	return s
}

func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// searchTargets are the goals for the search group.
func (b *bench) searchTargets(add func(name string, v float64, want string, met bool)) {
	goals := map[int]float64{20_000: 20, 100_000: 50}
	for _, r := range b.searches {
		n := fmt.Sprintf("%d rows", r.rows)
		f := ratio(r.full.P50, r.ours.P50)
		add("search p50: sqlite-vector full scan / ours, "+n, f, fmt.Sprintf(">= %.0f", goals[r.rows]), f >= goals[r.rows])
		add("search recall@10, ours, "+n, r.oursRecall, ">= 0.99", r.oursRecall >= 0.99)
		if r.quantOK {
			q := ratio(r.quant.P50, r.ours.P50)
			add("search p50: sqlite-vector quantized scan / ours, "+n, q, "> 1, at recall >= its", q > 1 && r.oursRecall >= r.quantRecall)
		}
		if r.rows == 100_000 {
			add("api RSS growth per indexed row (bytes), "+n, r.bytesPerRow, "< 4506 (1.1 x 4096)", r.bytesPerRow < 1.1*4096)
		}
	}
}
