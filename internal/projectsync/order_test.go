package projectsync_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/dispatch"
	"github.com/waywo/embed/internal/projectsync"
	"github.com/waywo/embed/internal/vector"
)

// heldQueue answers every text at once with a vector of its own, except
// the texts containing held, which wait for release: a slow worker.
type heldQueue struct {
	held    string
	waiting chan struct{} // a held text reached the queue
	release chan struct{}
}

func (q *heldQueue) Embed(ctx context.Context, req dispatch.Request) (dispatch.Result, error) {
	res := dispatch.Result{Vectors: make([][]float32, len(req.Documents))}
	for i, d := range req.Documents {
		res.Vectors[i] = []float32{float32(len(d)), 1, 0, 0}
		if strings.Contains(d, q.held) {
			close(q.waiting)
			select {
			case <-q.release:
			case <-ctx.Done():
				return dispatch.Result{}, ctx.Err()
			}
		}
	}
	return res, nil
}

// The bad order, forced: a sync of a project's old text is slow (its
// worker, say), the text changes, a sync of the new text finishes first;
// the old text's vector, arriving last, must not replace the new one's.
func TestAVectorNeverReplacesANewerTextsOne(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "waywo.db")
	log := zaptest.NewLogger(t)
	store, err := db.Open(context.Background(), path, log)
	require.NoError(t, err)
	defer store.Close()
	raw, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
	require.NoError(t, err)
	defer raw.Close()
	_, err = raw.Exec(db.InsertProject, 1, "An old title", "a description", `["go"]`)
	require.NoError(t, err)

	q := &heldQueue{held: "old", waiting: make(chan struct{}), release: make(chan struct{})}
	s := &projectsync.Syncer{Store: store, Queue: q, Model: "m", Dims: 4, Now: time.Now, Log: log}
	ctx := context.Background()
	older := make(chan map[int64]projectsync.Result, 1)
	go func() { older <- s.Sync(ctx, []int64{1}, false) }()
	<-q.waiting // the old text is with the slow worker

	_, err = raw.Exec("UPDATE waywo_projects SET title = 'A new, longer title' WHERE id = 1")
	require.NoError(t, err)
	require.Equal(t, projectsync.Embedded, s.Sync(ctx, []int64{1}, false)[1].Outcome, "the newer text's sync")
	close(q.release)
	require.Equal(t, projectsync.Superseded, (<-older)[1].Outcome, "the older text's sync stores nothing")

	var blob []byte
	require.NoError(t, raw.QueryRow("SELECT description_embedding FROM waywo_projects WHERE id = 1").Scan(&blob))
	got, err := vector.Decode(blob, 4)
	require.NoError(t, err)
	newText := "A new, longer title\na description\n#go"
	require.Equal(t, []float32{float32(len(newText)), 1, 0, 0}, got, "the row holds the newer text's vector")
	st, err := s.Status(ctx, projectsync.Page{Limit: 10})
	require.NoError(t, err)
	require.Equal(t, 1, st.Embedded, "and its state is the newer text's: not stale")
}
