// Package projectsync keeps waywo_projects.description_embedding equal to
// the model's vector of each project's text: it reads rows, skips those
// whose text, model and dimensions match what it last stored, embeds the
// rest through the same queue as /embed, and writes the blobs. Project
// events, the periodic reconcile and the reindex command all end here.
package projectsync

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/waywo/embed/embedclient"
	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/dispatch"
	"github.com/waywo/embed/internal/search"
	"github.com/waywo/embed/internal/tracing"
	"github.com/waywo/embed/internal/vector"
	"github.com/waywo/embed/internal/wire"
)

// Queue is the queue client's Embed; *dispatch.Client is one.
type Queue interface {
	Embed(ctx context.Context, req dispatch.Request) (dispatch.Result, error)
}

// Syncer embeds projects and stores their vectors.
type Syncer struct {
	Store *db.Store
	Queue Queue
	Model string
	Dims  int
	// MaxTextBytes bounds a project's text (EMBED_MAX_DOCUMENT_BYTES).
	MaxTextBytes int
	// Fingerprint, when set, tells the model fingerprint the workers serve
	// now (ok false while none is known). A row whose vector was computed
	// under another digest is stale.
	Fingerprint func() (fp vector.Fingerprint, ok bool)
	// Index, when set, is told of every vector as its transaction commits
	// (a search sees it at once), and brought in line with the file at
	// every reconcile.
	Index *search.Index
	Now   func() time.Time
	Log   *zap.Logger
}

// Outcome is what a sync did with one project.
type Outcome int

const (
	Embedded  Outcome = iota // a new vector was written
	Unchanged                // text, model and dimensions match the stored vector: no model call
	Missing                  // no such project (deleted): nothing to do
	Failed                   // cannot be embedded until the row changes; recorded with the reason
	Retry                    // a passing failure (queue, workers, database): try again later
	// Superseded: the row changed while its vector was computed, and
	// nothing was stored; a newer text's sync, or the reconcile, takes
	// over.
	Superseded
)

func (o Outcome) String() string {
	return [...]string{"embedded", "unchanged", "missing", "failed", "retry", "superseded"}[o]
}

// Result is one project's outcome. Reason explains Failed and Retry;
// Recorded says a Failed was already on record before this sync (no new
// dead letter is due).
type Result struct {
	Outcome  Outcome
	Reason   string
	Recorded bool
}

// State is where a row stands.
type State int

const (
	StateEmbedded State = iota // the stored vector is of the current text, model and dimensions
	StateStale                 // a vector is stored, but not of these (or not by us)
	StatePending               // no vector yet
	StateFailed                // failed for good with the current content; waits for a change
)

type classified struct {
	state       State
	modelChange string // StateStale because the model's digest changed: the digest it was embedded under
	key         string
	text        string
	err         error  // why no text could be built
	reason      string // StateFailed: the recorded reason; StateStale: what changed
}

// current is the served fingerprint, when known.
func (s *Syncer) current() (vector.Fingerprint, bool) {
	if s.Fingerprint == nil {
		return vector.Fingerprint{}, false
	}
	return s.Fingerprint()
}

func (s *Syncer) classify(p db.Project, cur vector.Fingerprint, known bool) classified {
	text, err := Text(p, s.MaxTextBytes)
	c := classified{key: contentKey(p, text, err), text: text, err: err}
	switch {
	case p.LastError.Valid && p.FailedHash.Valid && p.FailedHash.String == c.key:
		c.state, c.reason = StateFailed, p.LastError.String
	case !p.BlobBytes.Valid:
		c.state = StatePending
	case !p.Hash.Valid:
		c.state, c.reason = StateStale, "vector not written by this service"
	case p.Hash.String != c.key:
		c.state, c.reason = StateStale, "text changed"
	case p.Model.String != s.Model:
		c.state, c.reason = StateStale, fmt.Sprintf("model changed from %s", p.Model.String)
	case p.Dims.Int64 != int64(s.Dims) || p.BlobBytes.Int64 != int64(4*s.Dims):
		c.state, c.reason = StateStale, fmt.Sprintf("dimensions changed from %d", p.Dims.Int64)
	case known && p.Digest.String != cur.Digest:
		// Rows written before fingerprints were recorded have none: their
		// model is unknown (perhaps nemotron served causally, before `api
		// model install` prepared it), so they are re-embedded once.
		from := p.Digest.String
		if from == "" {
			from = "unrecorded"
		}
		c.state, c.modelChange = StateStale, from
		c.reason = fmt.Sprintf("model digest changed from %s to %s", from, cur.ShortDigest())
	default:
		c.state = StateEmbedded
	}
	return c
}

// Sync brings the given projects up to date, re-embedding unchanged ones
// too when force is set. Every id gets a Result; nothing is returned as an
// error because each project's fate is its own.
func (s *Syncer) Sync(ctx context.Context, ids []int64, force bool) map[int64]Result {
	out := make(map[int64]Result, len(ids))
	rows, err := s.Store.Projects(ctx, ids)
	if err != nil {
		for _, id := range ids {
			out[id] = Result{Outcome: Retry, Reason: err.Error()}
		}
		return out
	}
	var (
		todo     []db.Project
		texts    []string
		keys     []string
		failures []db.Failure
	)
	cur, known := s.current()
	for _, p := range rows {
		c := s.classify(p, cur, known)
		switch {
		case c.state == StateFailed && !force:
			out[p.ID] = Result{Outcome: Failed, Reason: c.reason, Recorded: true}
		case c.err != nil:
			out[p.ID] = Result{Outcome: Failed, Reason: c.err.Error()}
			failures = append(failures, db.Failure{ID: p.ID, Hash: c.key, Reason: c.err.Error()})
		case c.state == StateEmbedded && !force:
			out[p.ID] = Result{Outcome: Unchanged}
		default:
			todo = append(todo, p)
			texts = append(texts, c.text)
			keys = append(keys, c.key)
		}
	}
	for _, id := range ids {
		if _, ok := out[id]; !ok && !slices.ContainsFunc(todo, func(p db.Project) bool { return p.ID == id }) {
			out[id] = Result{Outcome: Missing}
		}
	}

	failures = append(failures, s.embedAndSave(ctx, todo, texts, keys, out)...)
	if len(failures) > 0 {
		known, err := s.Store.SaveFailures(ctx, failures, s.Now())
		if err != nil {
			s.Log.Error("could not record failed projects", zap.Int("count", len(failures)), zap.Error(err))
		}
		for _, id := range known { // recorded by a sync of the same project that ran at once
			if r := out[id]; r.Outcome == Failed {
				r.Recorded = true
				out[id] = r
			}
		}
	}
	return out
}

// embedAndSave embeds the rows' texts through the queue and stores the
// vectors, filling in out for them. A text the model refuses for good
// fails alone (it is returned, to be recorded) and the others are sent
// again.
func (s *Syncer) embedAndSave(ctx context.Context, rows []db.Project, texts, keys []string, out map[int64]Result) (failures []db.Failure) {
	var (
		res dispatch.Result
		err error
	)
	for len(rows) > 0 {
		res, err = s.Queue.Embed(ctx, dispatch.Request{ID: newRequestID(), Lane: wire.LaneBulk, Documents: texts})
		var de *dispatch.DocumentError
		if !errors.As(err, &de) || de.Index < 0 || de.Index >= len(rows) || !(errors.Is(err, wire.ErrRejected) || errors.Is(err, dispatch.ErrTooLarge)) {
			break
		}
		i := de.Index
		reason := "refused by the model: " + de.Err.Error()
		out[rows[i].ID] = Result{Outcome: Failed, Reason: reason}
		failures = append(failures, db.Failure{ID: rows[i].ID, Hash: keys[i], Reason: reason})
		rows, texts, keys = slices.Delete(rows, i, i+1), slices.Delete(texts, i, i+1), slices.Delete(keys, i, i+1)
	}
	if len(rows) == 0 {
		return failures
	}
	if err != nil {
		for _, p := range rows {
			out[p.ID] = Result{Outcome: Retry, Reason: "embedding: " + err.Error()}
		}
		return failures
	}
	es := make([]db.Embedding, len(rows))
	for i, p := range rows {
		es[i] = db.Embedding{ID: p.ID, Source: p, Blob: vector.Append(nil, res.Vectors[i]), Hash: keys[i]}
		if i < len(res.Fingerprints) {
			es[i].Digest, es[i].OllamaVersion = res.Fingerprints[i].Digest, res.Fingerprints[i].OllamaVersion
		}
	}
	// Indexed before the transaction, so that a search sees each vector
	// from the moment it commits. A vector that is then not stored (its
	// row changed or went) is judged by what the file holds whenever a
	// search finds it, and reloaded from the file at the next reconcile.
	for i, p := range rows {
		if s.Index != nil {
			s.Index.Put(search.Row{ID: p.ID, Vector: res.Vectors[i], Valid: p.Valid.Bool, Hash: keys[i], Digest: es[i].Digest})
		}
	}
	wctx, write := tracing.Tracer().Start(ctx, "write waywo_projects", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("db.system.name", "sqlite"), attribute.String("db.collection.name", "waywo_projects"),
		attribute.String("db.operation.name", "UPDATE"), attribute.Int("embed.rows", len(es))))
	saved, err := s.Store.SaveEmbeddings(wctx, es, s.Model, s.Dims, s.Now())
	if err != nil {
		write.RecordError(err)
		write.SetStatus(codes.Error, err.Error())
	}
	write.End()
	for _, p := range rows {
		switch {
		case err != nil:
			out[p.ID] = Result{Outcome: Retry, Reason: err.Error()}
		case slices.Contains(saved.Missing, p.ID):
			out[p.ID] = Result{Outcome: Missing}
		case slices.Contains(saved.Superseded, p.ID):
			out[p.ID] = Result{Outcome: Superseded, Reason: "the row changed while its vector was computed; nothing stored"}
		default:
			out[p.ID] = Result{Outcome: Embedded}
		}
	}
	return failures
}

func newRequestID() string {
	return "sync-" + rand.Text()
}

// Targets lists the projects a reconcile should queue: those pending or
// stale, and with all set every project.
func (s *Syncer) Targets(ctx context.Context, all bool) ([]int64, error) {
	ids, _, err := s.targets(ctx, all)
	return ids, err
}

// ModelChange counts the projects whose vectors were computed under
// another model digest than the one served now.
type ModelChange struct {
	From     string // the digest the vectors were computed under; "unrecorded" for rows older than fingerprints
	To       vector.Fingerprint
	Projects int
}

func (s *Syncer) targets(ctx context.Context, all bool) ([]int64, []ModelChange, error) {
	var ids []int64
	cur, known := s.current()
	changed := map[string]int{}
	err := s.Store.EachProject(ctx, func(p db.Project) error {
		c := s.classify(p, cur, known)
		if all || c.state == StatePending || c.state == StateStale {
			ids = append(ids, p.ID)
		}
		if c.modelChange != "" {
			changed[c.modelChange]++
		}
		return nil
	})
	var changes []ModelChange
	for from, n := range changed {
		changes = append(changes, ModelChange{From: from, To: cur, Projects: n})
	}
	slices.SortFunc(changes, func(a, b ModelChange) int { return strings.Compare(a.From, b.From) })
	return ids, changes, err
}

func shortDigest(d string) string { return vector.Fingerprint{Digest: d}.ShortDigest() }

// FailedProject is one project with the reason it is not embedded.
type FailedProject = embedclient.FailedProject

// Status counts rows by state, as GET /projects/sync-status answers.
// Queued is filled in by the caller.
type Status = embedclient.SyncStatus

// Page selects a page of Status's lists.
type Page = embedclient.Page

// Status reads every row and counts.
func (s *Syncer) Status(ctx context.Context, page Page) (Status, error) {
	st := Status{Model: s.Model, Dimensions: s.Dims, Failures: []FailedProject{}, Retrying: []FailedProject{}}
	cur, known := s.current()
	if known {
		st.ModelDigest = cur.Digest
	}
	// Projects come in id order: the page is the first Limit listed
	// projects after After, and the next starts after the last of them.
	listed, last := 0, int64(0)
	list := func(to *[]FailedProject, p FailedProject) {
		switch {
		case p.ID <= page.After:
		case listed < page.Limit:
			*to = append(*to, p)
			listed, last = listed+1, p.ID
		default:
			st.NextAfter = last
		}
	}
	err := s.Store.EachProject(ctx, func(p db.Project) error {
		st.Total++
		c := s.classify(p, cur, known)
		if (c.state == StateStale || c.state == StatePending) && p.LastError.Valid && !p.FailedHash.Valid {
			list(&st.Retrying, FailedProject{ID: p.ID, Reason: p.LastError.String})
		}
		switch c.state {
		case StateEmbedded:
			st.Embedded++
		case StateStale:
			st.Stale++
		case StatePending:
			st.Pending++
		case StateFailed:
			st.Failed++
			list(&st.Failures, FailedProject{ID: p.ID, Reason: c.reason})
		}
		return nil
	})
	return st, err
}
