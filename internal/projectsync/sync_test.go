package projectsync_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/projectsync"
	"github.com/waywo/embed/internal/vector"
)

// An event makes the sync write the model's vector of the text built as
// the backend builds it.
func TestEventWritesTheModelsVector(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.insert(1, "  Rust profiler", ollamatest.Sentence(1, 30), `["rust", "perf"]`)
	e.publish(1)
	e.settled()

	got := e.blob(1)
	require.NotNil(t, got, "no blob written")
	want := e.reference(projectText("  Rust profiler", ollamatest.Sentence(1, 30), "rust", "perf"))
	require.Greater(t, ollamatest.Cosine(got, want), 0.9999)
	// Not merely some vector: the text without hashtags is another one.
	other := e.reference(projectText("Rust profiler", ollamatest.Sentence(1, 30)))
	require.Less(t, ollamatest.Cosine(got, other), 0.9999)
}

// An updated row is re-embedded; an event for an unchanged row costs no
// model call.
func TestUpdateReembedsAndUnchangedCostsNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.insert(7, "Garden planner", ollamatest.Sentence(7, 20), `[]`)
	e.publish(7)
	e.settled()
	first := e.blob(7)
	require.NotNil(t, first)

	calls := e.calls.Load()
	e.publish(7)
	e.settled()
	require.Equal(t, calls, e.calls.Load(), "an unchanged row called the model")
	require.Equal(t, first, e.blob(7))

	_, err := e.raw.Exec("UPDATE waywo_projects SET description = ? WHERE id = 7", ollamatest.Sentence(70, 20))
	require.NoError(t, err)
	e.publish(7)
	e.settled()
	require.Greater(t, e.calls.Load(), calls)
	want := e.reference(projectText("Garden planner", ollamatest.Sentence(70, 20)))
	require.Greater(t, ollamatest.Cosine(e.blob(7), want), 0.9999)
	require.Less(t, ollamatest.Cosine(e.blob(7), first), 0.9999)
}

// A burst of events costs one embedding per project at most.
func TestBurstOfEventsCoalesces(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	for id := int64(1); id <= 10; id++ {
		e.insert(id, fmt.Sprintf("Project %d", id), ollamatest.Sentence(uint64(id), 25), `["a"]`)
	}
	calls := e.calls.Load()
	for i := range 100 {
		e.publish(int64(i%10 + 1))
	}
	// settled() once read only the consumer's counts, which lag a publish
	// and passed with project 1 not yet synced; it now waits for the
	// stream itself to be empty. The outcome is still waited for first (an
	// event really lost fails here), then the quiet before counting calls.
	require.Eventually(t, func() bool {
		for id := int64(1); id <= 10; id++ {
			if e.blob(id) == nil {
				return false
			}
		}
		return true
	}, 60*time.Second, 20*time.Millisecond, "every project gets a vector")
	e.settled()
	require.LessOrEqual(t, e.calls.Load()-calls, int64(10))
	for id := int64(1); id <= 10; id++ {
		require.NotNil(t, e.blob(id), "project %d has no vector", id)
	}
}

// A full sync writes description_embedding and nothing else: every other
// column of every row, and the table's definition, are byte-identical.
func TestSyncTouchesOnlyTheEmbeddingColumn(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{schema: backendSchema, noConsumer: true})
	for id := int64(1); id <= 40; id++ {
		e.insert(id, fmt.Sprintf("P%d", id), ollamatest.Sentence(uint64(id), 10), `["x","y"]`)
	}
	_, err := e.raw.Exec(`UPDATE waywo_projects SET umap_x = id * 0.5, extra_notes = 'note ' || id, source = NULL WHERE id % 3 = 0`)
	require.NoError(t, err)
	before := snapshot(t, e.raw)

	ids, err := e.syncer.Targets(context.Background(), true)
	require.NoError(t, err)
	sum := projectsync.Reindex(context.Background(), e.syncer, ids, projectsync.ReindexOptions{Batch: 16, Parallel: 2})
	require.Equal(t, 40, sum.Counts[projectsync.Embedded], "%+v", sum)

	require.Equal(t, before, snapshot(t, e.raw))
	for id := int64(1); id <= 40; id++ {
		require.NotNil(t, e.blob(id))
	}
}

// snapshot is every column but description_embedding of every row, quoted
// by SQLite itself (so types and bytes count), plus the table's SQL.
func snapshot(t *testing.T, raw *sql.DB) string {
	t.Helper()
	rows, err := raw.Query("SELECT name FROM pragma_table_info('waywo_projects') WHERE name != 'description_embedding'")
	require.NoError(t, err)
	var cols []string
	for rows.Next() {
		var c string
		require.NoError(t, rows.Scan(&c))
		cols = append(cols, "quote("+c+")")
	}
	require.NoError(t, rows.Err())
	require.Greater(t, len(cols), 10)
	var b strings.Builder
	var ddl string
	require.NoError(t, raw.QueryRow("SELECT sql FROM sqlite_master WHERE name = 'waywo_projects'").Scan(&ddl))
	b.WriteString(ddl + "\n")
	rows, err = raw.Query("SELECT " + strings.Join(cols, " || '|' || ") + " FROM waywo_projects ORDER BY id")
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var line string
		require.NoError(t, rows.Scan(&line))
		b.WriteString(line + "\n")
	}
	require.NoError(t, rows.Err())
	return b.String()
}

// Malformed rows are dead-lettered with their reason while the others go
// through; an event for a project that does not exist is acked quietly.
func TestMalformedRowsDeadLetterOthersProceed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.insert(1, "Good one", ollamatest.Sentence(1, 10), `["ok"]`)
	e.insert(2, "Bad tags", ollamatest.Sentence(2, 10), `not json`)
	e.insert(3, "Tags of numbers", ollamatest.Sentence(3, 10), `[1, 2]`)
	e.insert(4, "  ", " \n", `[]`)
	e.insert(5, "Also good", ollamatest.Sentence(5, 10), `[]`)
	for id := int64(1); id <= 5; id++ {
		e.publish(id)
	}
	e.publish(999) // no such project
	e.settled()

	require.NotNil(t, e.blob(1))
	require.NotNil(t, e.blob(5))
	for _, id := range []int64{2, 3, 4} {
		require.Nil(t, e.blob(id))
	}
	reasons := map[string]string{}
	for _, d := range e.deadLetters() {
		reasons[d.Subject] = d.Reason
	}
	require.Len(t, reasons, 3, "%v", reasons)
	require.Contains(t, reasons["waywo.projects.changed.2"], "hashtags is not a JSON array of strings")
	require.Contains(t, reasons["waywo.projects.changed.3"], "element 0 is \"1\"")
	require.Contains(t, reasons["waywo.projects.changed.4"], "text is empty")

	st, err := e.syncer.Status(context.Background(), everything)
	require.NoError(t, err)
	require.Equal(t, 5, st.Total)
	require.Equal(t, 2, st.Embedded)
	require.Equal(t, 3, st.Failed)
	require.Equal(t, []int64{2, 3, 4}, []int64{st.Failures[0].ID, st.Failures[1].ID, st.Failures[2].ID})
	// Paged: two at a time, in id order, each page after the last.
	st, err = e.syncer.Status(context.Background(), projectsync.Page{Limit: 2})
	require.NoError(t, err)
	require.Equal(t, 3, st.Failed, "counts are whole on every page")
	require.Len(t, st.Failures, 2)
	require.EqualValues(t, 3, st.NextAfter)
	st, err = e.syncer.Status(context.Background(), projectsync.Page{After: st.NextAfter, Limit: 2})
	require.NoError(t, err)
	require.Equal(t, []projectsync.FailedProject{{ID: 4, Reason: st.Failures[0].Reason}}, st.Failures)
	require.Zero(t, st.NextAfter, "the last page says so")

	// Failed rows wait for a change: another event costs nothing and adds
	// no dead letter; fixing the row heals it.
	calls := e.calls.Load()
	e.publish(2)
	e.settled()
	require.Equal(t, calls, e.calls.Load())
	require.Len(t, e.deadLetters(), 3)
	_, err = e.raw.Exec(`UPDATE waywo_projects SET hashtags = '["fixed"]' WHERE id = 2`)
	require.NoError(t, err)
	e.publish(2)
	e.settled()
	require.NotNil(t, e.blob(2))
	st, err = e.syncer.Status(context.Background(), everything)
	require.NoError(t, err)
	require.Equal(t, 2, st.Failed)
}

// The reconcile finds rows with no vector and rows whose text changed
// behind the sync's back (an event that was lost), and queues them.
func TestReconcileFindsMissingAndStale(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	for id := int64(1); id <= 6; id++ {
		e.insert(id, fmt.Sprintf("P%d", id), ollamatest.Sentence(uint64(id), 12), `[]`)
	}
	n, _, err := projectsync.Reconcile(context.Background(), e.syncer, e.JS, false)
	require.NoError(t, err)
	require.Equal(t, 6, n)
	e.settled()
	for id := int64(1); id <= 6; id++ {
		require.NotNil(t, e.blob(id))
	}

	// Nothing to do now.
	n, _, err = projectsync.Reconcile(context.Background(), e.syncer, e.JS, false)
	require.NoError(t, err)
	require.Zero(t, n)

	// Text changed with no event; a blob cleared by hand; a row deleted.
	_, err = e.raw.Exec("UPDATE waywo_projects SET title = 'Renamed' WHERE id = 2")
	require.NoError(t, err)
	_, err = e.raw.Exec("UPDATE waywo_projects SET description_embedding = NULL WHERE id = 4")
	require.NoError(t, err)
	_, err = e.raw.Exec("DELETE FROM waywo_projects WHERE id = 6")
	require.NoError(t, err)
	st, err := e.syncer.Status(context.Background(), everything)
	require.NoError(t, err)
	served, _ := e.Workers.Fingerprint()
	require.Equal(t, projectsync.Status{Model: e.ollama.Model, ModelDigest: served.Digest, Dimensions: e.ollama.Dims, Total: 5, Embedded: 3, Stale: 1, Pending: 1,
		Failures: []projectsync.FailedProject{}, Retrying: []projectsync.FailedProject{}}, st)

	ids, err := e.syncer.Targets(context.Background(), false)
	require.NoError(t, err)
	require.Equal(t, []int64{2, 4}, ids)
	n, _, err = projectsync.Reconcile(context.Background(), e.syncer, e.JS, false)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	e.settled()
	want := e.reference(projectText("Renamed", ollamatest.Sentence(2, 12)))
	require.Greater(t, ollamatest.Cosine(e.blob(2), want), 0.9999)
	require.NotNil(t, e.blob(4))
	st, err = e.syncer.Status(context.Background(), everything)
	require.NoError(t, err)
	require.Equal(t, 5, st.Embedded)
}

// A change of model (or dimensions) makes every vector stale.
func TestModelChangeMakesRowsStale(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noConsumer: true})
	e.insert(1, "One", "first", `[]`)
	e.insert(2, "Two", "second", `[]`)
	sum := projectsync.Reindex(context.Background(), e.syncer, []int64{1, 2}, projectsync.ReindexOptions{Batch: 8})
	require.Equal(t, 2, sum.Counts[projectsync.Embedded])

	other := *e.syncer
	other.Model = "another-model"
	ids, err := other.Targets(context.Background(), false)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2}, ids)
	other = *e.syncer
	other.Dims = e.ollama.Dims * 2
	ids, err = other.Targets(context.Background(), false)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2}, ids)
	ids, err = e.syncer.Targets(context.Background(), false)
	require.NoError(t, err)
	require.Empty(t, ids)
}

// Reindex over 1,000 rows completes, and again with nothing changed costs
// no model call.
func TestReindexThousandRows(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noConsumer: true})
	tx, err := e.raw.Begin()
	require.NoError(t, err)
	for id := int64(1); id <= 1000; id++ {
		_, err := tx.Exec(db.InsertProject, id, fmt.Sprintf("Project %d", id), ollamatest.Sentence(uint64(id), 8), `["go"]`)
		require.NoError(t, err)
	}
	require.NoError(t, tx.Commit())

	ids, err := e.syncer.Targets(context.Background(), false)
	require.NoError(t, err)
	require.Len(t, ids, 1000)
	done := 0
	start := time.Now()
	sum := projectsync.Reindex(context.Background(), e.syncer, ids, projectsync.ReindexOptions{Batch: 32, Parallel: 4, Attempts: 3,
		Progress: func(n int) { done += n }})
	require.Equal(t, 1000, sum.Total)
	require.Equal(t, 1000, sum.Counts[projectsync.Embedded], "%+v", sum)
	require.Equal(t, 1000, done)
	t.Logf("cold reindex of 1000: %s, %d model calls", time.Since(start), e.calls.Load())

	calls := e.calls.Load()
	ids, err = e.syncer.Targets(context.Background(), true)
	require.NoError(t, err)
	sum = projectsync.Reindex(context.Background(), e.syncer, ids, projectsync.ReindexOptions{Batch: 32, Parallel: 4})
	require.Equal(t, 1000, sum.Counts[projectsync.Unchanged])
	require.Equal(t, calls, e.calls.Load())
}

// A text the model refuses fails that project alone, for good, with the
// model's reason; its neighbours in the batch are embedded.
func TestRefusedTextFailsAlone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noConsumer: true, noTruncate: true})
	e.insert(1, "Short", "fits the context", `[]`)
	e.insert(2, "Long", ollamatest.Sentence(2, 2000), `[]`) // far over the tiny model's 512 tokens
	e.insert(3, "Short too", "also fits", `[]`)
	res := e.syncer.Sync(context.Background(), []int64{1, 2, 3}, false)
	require.Equal(t, projectsync.Embedded, res[1].Outcome)
	require.Equal(t, projectsync.Embedded, res[3].Outcome)
	require.Equal(t, projectsync.Failed, res[2].Outcome)
	require.Contains(t, res[2].Reason, "refused by the model")
	require.NotNil(t, e.blob(1))
	require.Nil(t, e.blob(2))
	st, err := e.syncer.Status(context.Background(), everything)
	require.NoError(t, err)
	require.Equal(t, 1, st.Failed)
	require.Equal(t, int64(2), st.Failures[0].ID)
	// Recorded: asked again, it is not sent to the model.
	calls := e.calls.Load()
	res = e.syncer.Sync(context.Background(), []int64{2}, false)
	require.Equal(t, projectsync.Failed, res[2].Outcome)
	require.True(t, res[2].Recorded)
	require.Equal(t, calls, e.calls.Load())
}

// A passing failure on record (a sync that ran out of attempts during an
// outage) shows in the status as retrying, and the reconcile still queues
// the project; the next success clears it.
func TestStatusShowsRetryingProjects(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noConsumer: true})
	e.insert(1, "One", "first", `[]`)
	e.insert(2, "Two", "second", `[]`)
	_, err := e.store.SaveFailures(context.Background(), []db.Failure{{ID: 1, Reason: "gave up after 5 attempts: no worker"}}, time.Now())
	require.NoError(t, err)
	st, err := e.syncer.Status(context.Background(), everything)
	require.NoError(t, err)
	require.Equal(t, 2, st.Pending)
	require.Zero(t, st.Failed)
	require.Equal(t, []projectsync.FailedProject{{ID: 1, Reason: "gave up after 5 attempts: no worker"}}, st.Retrying)
	ids, err := e.syncer.Targets(context.Background(), false)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2}, ids)

	sum := projectsync.Reindex(context.Background(), e.syncer, ids, projectsync.ReindexOptions{Batch: 8})
	require.Equal(t, 2, sum.Counts[projectsync.Embedded])
	st, err = e.syncer.Status(context.Background(), everything)
	require.NoError(t, err)
	require.Empty(t, st.Retrying)
	require.Equal(t, 2, st.Embedded)
}

// Every synced row records the fingerprint of the model that computed it.
// When the workers serve another digest, those rows are stale: the
// reconcile queues them and says so once, with how many.
func TestAModelChangeMakesRowsStale(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	for id := int64(1); id <= 3; id++ {
		e.insert(id, fmt.Sprintf("P%d", id), ollamatest.Sentence(uint64(id), 8), `[]`)
	}
	n, _, err := projectsync.Reconcile(context.Background(), e.syncer, e.JS, false)
	require.NoError(t, err)
	require.Equal(t, 3, n)
	e.settled()
	served, ok := e.Workers.Fingerprint()
	require.True(t, ok)
	var digest, version string
	require.NoError(t, e.raw.QueryRow("SELECT model_digest, ollama_version FROM embed_sync_state WHERE project_id = 2").Scan(&digest, &version))
	require.Equal(t, served.Digest, digest)
	require.Equal(t, served.OllamaVersion, version)
	st, err := e.syncer.Status(context.Background(), everything)
	require.NoError(t, err)
	require.Equal(t, 3, st.Embedded)
	require.Equal(t, served.Digest, st.ModelDigest)

	// The same rows, seen from a system whose workers serve a new model.
	next := vector.Fingerprint{Digest: "sha256:" + strings.Repeat("ab", 32), OllamaVersion: "0.32.15"}
	changed := *e.syncer
	changed.Fingerprint = func() (vector.Fingerprint, bool) { return next, true }
	st, err = changed.Status(context.Background(), everything)
	require.NoError(t, err)
	require.Equal(t, 3, st.Stale)
	require.Equal(t, next.Digest, st.ModelDigest)

	core, logs := observer.New(zap.InfoLevel)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		projectsync.RunReconciler(ctx, &changed, e.JS, 5*time.Millisecond, nil, zap.New(core))
	}()
	require.Eventually(t, func() bool { return logs.FilterMessage("reconciled").Len() >= 3 }, 10*time.Second, 5*time.Millisecond)
	cancel()
	<-done
	for _, r := range logs.FilterMessage("reconciled").All() {
		require.EqualValues(t, 3, r.ContextMap()["queued"])
	}
	announced := logs.FilterMessageSnippet("model changed from").All()
	require.Len(t, announced, 1, "said once, not every round")
	require.Equal(t, fmt.Sprintf("model changed from %s to abababababab: 3 projects to re-embed", served.ShortDigest()), announced[0].Message)
}

// A storm of events is logged as a few summaries, not a line per batch,
// and the summaries add up to what was synced.
func TestEventStormIsLoggedAsSummaries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noConsumer: true})
	const projects = 300
	for id := int64(1); id <= projects; id++ {
		e.insert(id, fmt.Sprintf("Project %d", id), ollamatest.Sentence(uint64(id), 6), `["a"]`)
	}
	_, err := projectsync.EnsureProjects(context.Background(), e.JS, broker.Placement{}, time.Minute, 3)
	require.NoError(t, err)
	for range 3 {
		for id := int64(1); id <= projects; id++ {
			e.publish(id)
		}
	}
	core, logs := observer.New(zap.InfoLevel)
	stop := e.runConsumer(zap.New(core))
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, e.raw.QueryRow("SELECT count(*) FROM waywo_projects WHERE description_embedding IS NOT NULL").Scan(&n))
		return n == projects
	}, 120*time.Second, 50*time.Millisecond)
	stop() // logs what the last interval did

	lines := logs.FilterMessage("synced projects").All()
	synced, batches := 0, 0
	for _, l := range lines {
		synced += int(l.ContextMap()["projects"].(int64))
		batches += int(l.ContextMap()["batches"].(int64))
	}
	t.Logf("%d batches logged in %d lines", batches, len(lines))
	require.GreaterOrEqual(t, synced, projects)
	require.Greater(t, batches, len(lines), "batches are summed, not logged one by one")
	require.LessOrEqual(t, len(lines), 2+int(time.Since(lines[0].Time)/projectsync.SummaryEvery))
}

// Two syncs of one broken project at once (two events in two batches)
// report its failure once: the second to record it sees it on record.
func TestConcurrentSyncsReportAFailureOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noConsumer: true})
	for round := range 5 {
		id := int64(round + 1)
		e.insert(id, "Broken tags", "d", "rust, go")
		results := make(chan projectsync.Result, 2)
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() { results <- e.syncer.Sync(context.Background(), []int64{id}, false)[id] })
		}
		wg.Wait()
		close(results)
		reported := 0
		for r := range results {
			require.Equal(t, projectsync.Failed, r.Outcome)
			if !r.Recorded {
				reported++
			}
		}
		require.Equal(t, 1, reported, "round %d", round)
	}
}
