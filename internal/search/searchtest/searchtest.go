// Package searchtest makes WAYWO files full of generated vectors for the
// search's tests and benchmarks, and scans them exactly, independently of
// the index: the answer a search must give.
package searchtest

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	_ "github.com/mattn/go-sqlite3" // the driver
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/vector"
)

// Digest is the model digest the generated rows carry.
const Digest = "sha256:5ea4c45ea4c45ea4c45ea4c45ea4c45ea4c45ea4c45ea4c45ea4c45ea4c45ea4"

// Data draws vectors shaped like a corpus's embeddings rather than
// uniform noise: every vector shares a common direction (embeddings are
// anisotropic), belongs to one of Topics topics and one of 10 subtopics
// in it, and has noise of its own; queries are a subtopic's direction
// with fresh noise. Neighbours are then near, but not tied.
type Data struct {
	Dims   int
	Topics int
	rng    *rand.Rand
	common []float32
	topic  [][]float32
	sub    [][]float32
}

// NewData seeds a generator of dims-dimensional vectors.
func NewData(dims, topics int, seed uint64) *Data {
	d := &Data{Dims: dims, Topics: topics, rng: rand.New(rand.NewPCG(seed, 7))}
	d.common = d.gauss()
	for range topics {
		d.topic = append(d.topic, d.gauss())
		for range 10 {
			d.sub = append(d.sub, d.gauss())
		}
	}
	return d
}

// gauss is a vector of norm about 1.
func (d *Data) gauss() []float32 {
	v := make([]float32, d.Dims)
	s := 1 / math.Sqrt(float64(d.Dims))
	for i := range v {
		v[i] = float32(d.rng.NormFloat64() * s)
	}
	return v
}

func (d *Data) mix(noise float64) []float32 {
	t := d.rng.IntN(d.Topics)
	sub := d.sub[t*10+d.rng.IntN(10)]
	n := d.gauss()
	v := make([]float32, d.Dims)
	for i := range v {
		v[i] = 0.7*d.common[i] + 0.6*d.topic[t][i] + 0.5*sub[i] + float32(noise)*n[i]
	}
	return v
}

// Vector is a project's vector.
func (d *Data) Vector() []float32 { return d.mix(0.45) }

// Query is a query's vector.
func (d *Data) Query() []float32 { return d.mix(0.6) }

// Fill writes n projects into the WAYWO file at path (created as the api
// creates it), ids 1 to n, each with a vector of Digest; every tenth is
// not a valid project. It returns their vectors by id.
func Fill(ctx context.Context, path string, d *Data, n int) (map[int64][]float32, error) {
	store, err := db.Open(ctx, path, zap.NewNop())
	if err != nil {
		return nil, err
	}
	if err := store.Close(); err != nil {
		return nil, err
	}
	raw, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	tx, err := raw.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback() }()
	out := make(map[int64][]float32, n)
	for id := int64(1); id <= int64(n); id++ {
		v := d.Vector()
		out[id] = v
		if err := insert(ctx, tx, id, fmt.Sprintf("Project %d", id), id%10 != 0, v, Digest); err != nil {
			return nil, err
		}
	}
	return out, tx.Commit()
}

// Inserter is what insert writes through (a *sql.DB or a *sql.Tx).
type Inserter interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Insert writes one project with its vector, as the sync would have.
func Insert(ctx context.Context, to Inserter, id int64, title string, valid bool, v []float32, digest string) error {
	return insert(ctx, to, id, title, valid, v, digest)
}

func insert(ctx context.Context, to Inserter, id int64, title string, valid bool, v []float32, digest string) error {
	if _, err := to.ExecContext(ctx, `INSERT OR REPLACE INTO waywo_projects (id, source_comment_id, is_valid_project, title, short_description,
		description, hashtags, idea_score, complexity_score, is_bookmarked, created_at, processed_at, description_embedding)
		VALUES (?, 1, ?, ?, '', 'generated', '[]', 5, 5, 0, '2025-01-01 00:00:00', '2025-01-01 00:00:00', ?)`,
		id, valid, title, vector.Append(nil, v)); err != nil {
		return err
	}
	_, err := to.ExecContext(ctx, `INSERT OR REPLACE INTO embed_sync_state (project_id, content_hash, model, dims, embedded_at, model_digest)
		VALUES (?, ?, 'generated', ?, '2025-01-01T00:00:00Z', ?)`, id, Hash(id, v), len(v), digest)
	return err
}

// Hash is the content hash Insert records for a row: one per vector.
func Hash(id int64, v []float32) string {
	return fmt.Sprintf("h%d-%x", id, math.Float32bits(v[0]))
}

// Hit is one row of an exact answer.
type Hit struct {
	ID    int64
	Score float64
}

// Exact is the top k by cosine similarity to q of every row in the file
// at path whose vector is of digest (valid ones only with validOnly),
// computed in float64 from the blobs, row by row: the answer a search must
// give.
func Exact(ctx context.Context, path string, q []float32, k int, validOnly bool, digest string, exclude int64) ([]Hit, error) {
	out, err := ExactMany(ctx, path, [][]float32{q}, k, validOnly, digest, exclude)
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// ExactMany is Exact for several queries in one pass over the file.
func ExactMany(ctx context.Context, path string, qs [][]float32, k int, validOnly bool, digest string, exclude int64) ([][]Hit, error) {
	raw, err := sql.Open("sqlite3", "file:"+path+"?mode=ro&_busy_timeout=10000")
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	rows, err := raw.QueryContext(ctx, `SELECT p.id, p.is_valid_project, p.description_embedding FROM waywo_projects p
		JOIN embed_sync_state s ON s.project_id = p.id WHERE typeof(p.description_embedding) = 'blob' AND s.model_digest = ?`, digest)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	if len(qs) == 0 {
		return nil, nil
	}
	dims := len(qs[0])
	qn := make([]float64, len(qs))
	for j, q := range qs {
		for _, f := range q {
			qn[j] += float64(f) * float64(f)
		}
	}
	out := make([][]Hit, len(qs))
	for rows.Next() {
		var id int64
		var valid bool
		var blob []byte
		if err := rows.Scan(&id, &valid, &blob); err != nil {
			return nil, err
		}
		if (validOnly && !valid) || id == exclude {
			continue
		}
		v, err := vector.Decode(blob, dims)
		if err != nil {
			continue
		}
		var vn float64
		for _, f := range v {
			vn += float64(f) * float64(f)
		}
		for j, q := range qs {
			var dot float64
			for i, f := range v {
				dot += float64(f) * float64(q[i])
			}
			out[j] = append(out[j], Hit{ID: id, Score: dot / math.Sqrt(qn[j]*vn)})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for j := range out {
		slices.SortFunc(out[j], func(a, b Hit) int {
			if c := cmp.Compare(b.Score, a.Score); c != 0 {
				return c
			}
			return cmp.Compare(a.ID, b.ID)
		})
		out[j] = out[j][:min(len(out[j]), k)]
	}
	return out, nil
}

// Recall is the share of want's ids in got.
func Recall(got []int64, want []Hit) float64 {
	if len(want) == 0 {
		return 1
	}
	n := 0
	for _, w := range want {
		if slices.Contains(got, w.ID) {
			n++
		}
	}
	return float64(n) / float64(len(want))
}
