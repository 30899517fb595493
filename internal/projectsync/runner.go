package projectsync

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/deadletter"
	"github.com/waywo/embed/internal/search"
	"github.com/waywo/embed/internal/vector"
	"github.com/waywo/embed/internal/wire"
)

// ErrNotRunning is the answer of Status while WAYWO_DB cannot be opened:
// the api serves 503 with its reason, and /embed serves regardless.
var ErrNotRunning = errors.New("the project sync is not running")

// Options configure the sync as the api runs it.
type Options struct {
	DBPath       string // WAYWO_DB
	Model        string
	Dims         int
	MaxTextBytes int           // EMBED_MAX_DOCUMENT_BYTES
	Batch        int           // projects per sync (EMBED_BATCH_SIZE)
	Parallel     int           // syncs in flight (EMBED_SYNC_BATCHES)
	MaxDeliver   int           // attempts per event (EMBED_MAX_DELIVER)
	Timeout      time.Duration // one sync's deadline (EMBED_REQUEST_TIMEOUT)
	Reconcile    time.Duration // EMBED_RECONCILE_INTERVAL; 0 reconciles only at start
	Placement    broker.Placement
	// OpenRetry is how often WAYWO_DB is tried again while it cannot be
	// opened; default 10 s.
	OpenRetry time.Duration
}

// Workers is what the sync asks of the live workers; *dispatch.Liveness is
// one.
type Workers interface {
	// Ready says how many workers can embed now.
	Ready() (int, string)
	// Fingerprint is the model fingerprint the workers serve now.
	Fingerprint() (vector.Fingerprint, bool)
}

// Runner is the sync as the api runs it: the events consumer and the
// periodic reconcile over WAYWO_DB, and what the /projects routes ask of
// it. The events stream is NATS's and is ready before the file: events are
// stored from the start whatever becomes of it. The file is opened in the
// background and tried again every OpenRetry while it cannot be, so that a
// broken database does not keep /embed from serving.
type Runner struct {
	opts    Options
	js      jetstream.JetStream
	cons    jetstream.Consumer
	queue   Queue
	workers Workers
	dead    *deadletter.Writer
	obs     Observer
	log     *zap.Logger
	index   *search.Index // over whichever file is open

	mu     sync.Mutex
	syncer *Syncer // nil while WAYWO_DB is not open
	err    error   // why syncer is nil
}

// NewRunner tries WAYWO_DB once, so that the usual case is settled before
// the api listens; Run does the rest. obs may be nil.
func NewRunner(ctx context.Context, o Options, js jetstream.JetStream, q Queue, workers Workers, dead *deadletter.Writer, obs Observer, log *zap.Logger) *Runner {
	if o.OpenRetry <= 0 {
		o.OpenRetry = 10 * time.Second
	}
	r := &Runner{opts: o, js: js, queue: q, workers: workers, dead: dead, obs: obs, log: log, index: search.New(o.Dims)}
	r.syncer, r.err = r.open(ctx)
	return r
}

// NewSyncer opens WAYWO_DB (creating the backend's table where it is
// missing) and returns the syncer over it, for a command such as reindex;
// the caller closes its Store.
func NewSyncer(ctx context.Context, o Options, q Queue, workers Workers, log *zap.Logger) (*Syncer, error) {
	store, err := db.Open(ctx, o.DBPath, log)
	if err != nil {
		return nil, err
	}
	return &Syncer{
		Store: store, Queue: q, Model: o.Model, Dims: o.Dims, MaxTextBytes: o.MaxTextBytes,
		Now: time.Now, Log: log.Named("sync"), Fingerprint: workers.Fingerprint,
	}, nil
}

func (r *Runner) open(ctx context.Context) (*Syncer, error) {
	s, err := NewSyncer(ctx, r.opts, r.queue, r.workers, r.log)
	if err == nil {
		s.Index = r.index
	}
	return s, err
}

// Run makes sure the events stream and its consumer exist (trying again
// while NATS cannot be reached or a cluster elects its leaders), opens
// WAYWO_DB, trying again every OpenRetry, then consumes events and
// reconciles until ctx ends; it returns once the syncs in flight have
// finished and been acked, with the file closed. It fails only when the
// servers refuse the events stream as configured (a setting must change).
func (r *Runner) Run(ctx context.Context) error {
	defer r.closeStore()
	err := broker.Retry(ctx, "creating the project events stream", r.log, func(ctx context.Context) (err error) {
		r.cons, err = EnsureProjects(ctx, r.js, r.opts.Placement, r.opts.Timeout+30*time.Second, r.opts.MaxDeliver)
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	r.mu.Lock()
	s, err := r.syncer, r.err
	r.mu.Unlock()
	logged := ""
	for s == nil {
		if err.Error() != logged {
			logged = err.Error()
			r.log.Error("project sync cannot start; /embed serves meanwhile, events wait in their stream",
				zap.String("db", r.opts.DBPath), zap.Duration("retry_every", r.opts.OpenRetry), zap.Error(err))
		}
		sleep(ctx, r.opts.OpenRetry)
		if ctx.Err() != nil {
			return nil
		}
		s, err = r.open(ctx)
		r.mu.Lock()
		r.syncer, r.err = s, err
		r.mu.Unlock()
	}
	r.log.Info("project sync on", zap.String("db", s.Store.Path()), zap.Duration("reconcile_interval", r.opts.Reconcile))
	consumer := &Consumer{
		Syncer: s, Consumer: r.cons, DeadLetters: r.dead,
		Ready: func() bool { n, _ := r.workers.Ready(); return n > 0 },
		Batch: r.opts.Batch, Parallel: r.opts.Parallel, MaxDeliver: r.opts.MaxDeliver,
		Timeout: r.opts.Timeout, Observer: r.obs, Log: r.log.Named("sync"),
	}
	var wg sync.WaitGroup
	wg.Go(func() { RunReconciler(ctx, s, r.js, r.opts.Reconcile, r.obs, r.log.Named("reconcile")) })
	wg.Go(func() { consumer.Run(ctx) })
	wg.Wait()
	return nil
}

// closeStore closes WAYWO_DB, opened or not, however Run ends.
func (r *Runner) closeStore() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.syncer != nil {
		_ = r.syncer.Store.Close()
	}
}

// Changed queues a sync of project id, as a NATS event does
// (POST /projects/{id}/changed); the event waits in its stream even while
// the sync cannot run.
func (r *Runner) Changed(ctx context.Context, id int64) error {
	return PublishProjectChanged(ctx, r.js, id, "http")
}

// running is the syncer over the open file, or ErrNotRunning naming why
// there is none.
func (r *Runner) running() (*Syncer, error) {
	r.mu.Lock()
	s, why := r.syncer, r.err
	r.mu.Unlock()
	if s == nil {
		return nil, fmt.Errorf("%w (WAYWO_DB=%s; tried every %s): %v", ErrNotRunning, r.opts.DBPath, r.opts.OpenRetry, why)
	}
	return s, nil
}

// Status counts projects by state, with the events waiting
// (GET /projects/sync-status), or fails with ErrNotRunning naming why.
// The backlog is asked for at most 2 s: with its stream unavailable the
// answer says why instead of hanging.
func (r *Runner) Status(ctx context.Context, page Page) (Status, error) {
	s, err := r.running()
	if err != nil {
		return Status{}, err
	}
	st, err := s.Status(ctx, page)
	if err != nil {
		return Status{}, err
	}
	st.Search = r.indexStatus()
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if st.Queued, err = ProjectsBacklog(qctx, r.js); err != nil {
		st.QueueError = fmt.Sprintf("events stream %s: %v", wire.ProjectsStream, err)
	}
	return st, nil
}
