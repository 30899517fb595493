package system_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/ollama"
	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/systemtest"
	"github.com/waywo/embed/internal/wire"
	"github.com/waywo/embed/internal/worker"
)

const dims = 8

// violations collects a connection's permission violations, as the server
// reports them.
type violations chan error

func (v violations) option() nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if strings.Contains(err.Error(), "Permissions Violation") {
			v <- err
		}
	})
}

// refused waits for the server's refusal of what, on subject (skipping
// other refusals reported meanwhile).
func (v violations) refused(t *testing.T, what, subject string) {
	t.Helper()
	want := "Permissions Violation for " + what + " to \"" + subject + "\""
	timeout := time.After(5 * time.Second)
	for {
		select {
		case err := <-v:
			if strings.Contains(err.Error(), want) {
				return
			}
		case <-timeout:
			t.Fatalf("the server did not refuse %s to %s", what, subject)
		}
	}
}

// call makes a JetStream API call the server must refuse: it fails (no
// answer comes) and the server reports the refused subject.
func (v violations) call(t *testing.T, subject string, f func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	require.Error(t, f(ctx), subject)
	v.refused(t, "Publish", subject)
}

func fakeModel(t *testing.T) worker.Model {
	t.Helper()
	f, err := ollamatest.StartFake("fake", dims, 0)
	require.NoError(t, err)
	t.Cleanup(f.Stop)
	u, err := url.Parse(f.URL)
	require.NoError(t, err)
	return ollama.NewEndpoint(u, ollama.Options{Model: "fake", Dims: dims, MaxBatch: 32, Timeout: 10 * time.Second, KeepAlive: -1, Truncate: true})
}

// pending publishes a request with no worker yet and returns the reply
// subject its job carries, read from the jobs stream as an attacker who
// guessed it would use it, and the request's outcome.
func pending(t *testing.T, b *systemtest.Bundle) (string, <-chan [][]float32) {
	t.Helper()
	out := make(chan [][]float32, 1)
	go func() {
		res, err := b.Embed(30*time.Second, "a text")
		if err != nil {
			t.Error(err)
		}
		out <- res.Vectors
	}()
	var reply string
	require.Eventually(t, func() bool {
		s, err := b.JS.Stream(context.Background(), wire.JobsStream)
		if err != nil {
			return false
		}
		m, err := s.GetMsg(context.Background(), 1)
		if err != nil {
			return false
		}
		reply = m.Header.Get(wire.HeaderReply)
		return true
	}, 10*time.Second, 10*time.Millisecond)
	return reply, out
}

var forged = wire.Reply{Vectors: [][]float32{{1, 1, 1, 1, 1, 1, 1, 1}}, Worker: "mallory"}

// The publisher (the WAYWO backend's role, and every client without
// credentials on the embedded server) may announce a project change, and
// cannot read a queued job, answer one or touch a stream: the forged
// reply never reaches the api, which answers with the worker's vector.
func TestPublisherCanOnlyAnnounce(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, systemtest.Options{Dims: dims})
	v := make(violations, 16)
	pub := b.Dial(wire.RolePublisher, "backend", v.option())
	pjs, err := jetstream.New(pub)
	require.NoError(t, err)
	ctx := context.Background()

	// What it is for: a JetStream publish of an event, acknowledged.
	_, err = b.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: wire.ProjectsStream, Subjects: []string{wire.ProjectSubjectPrefix + "*"}})
	require.NoError(t, err)
	_, err = pjs.Publish(ctx, wire.ProjectSubjectPrefix+"1", nil)
	require.NoError(t, err, "the publisher announces a project change")

	reply, got := pending(t, b)
	_, err = pub.SubscribeSync(wire.JobsSubject)
	require.NoError(t, err)
	require.NoError(t, pub.Flush())
	v.refused(t, "Subscription", wire.JobsSubject)
	v.call(t, "$JS.API.CONSUMER.CREATE.EMBED_JOBS.mallory", func(ctx context.Context) error {
		_, err := pjs.CreateOrUpdateConsumer(ctx, wire.JobsStream, jetstream.ConsumerConfig{Durable: "mallory"})
		return err
	})
	require.NoError(t, pub.PublishMsg(forged.Msg(reply)))
	require.NoError(t, pub.Flush())
	v.refused(t, "Publish", reply)
	v.call(t, "$JS.API.STREAM.DELETE.EMBED_JOBS", func(ctx context.Context) error { return pjs.DeleteStream(ctx, wire.JobsStream) })
	v.call(t, "$JS.API.STREAM.DELETE.WAYWO_PROJECTS", func(ctx context.Context) error { return pjs.DeleteStream(ctx, wire.ProjectsStream) })

	b.StartWorker(systemtest.WorkerOptions{Models: []worker.Model{fakeModel(t)}})
	vecs := <-got
	require.Len(t, vecs, 1)
	require.NotEqual(t, forged.Vectors[0], vecs[0], "the api answered with the forged vector")
	for _, name := range []string{wire.JobsStream, wire.ProjectsStream} {
		_, err := b.JS.Stream(ctx, name)
		require.NoError(t, err, "stream %s is still there", name)
	}
}

// A worker may answer a job (so a forged reply is caught only by the
// role: this is what the publisher was refused), and cannot announce a
// project or create, purge or delete a stream.
func TestWorkerCannotAnnounceOrTouchStreams(t *testing.T) {
	t.Parallel()
	b := systemtest.Setup(t, systemtest.Options{Dims: dims})
	v := make(violations, 16)
	w := b.Dial(wire.RoleWorker, "worker", v.option())
	wjs, err := jetstream.New(w)
	require.NoError(t, err)
	ctx := context.Background()

	reply, got := pending(t, b)
	require.NoError(t, w.PublishMsg(forged.Msg(reply)))
	require.Equal(t, forged.Vectors, <-got, "a worker's reply is the api's answer")

	require.NoError(t, w.Publish(wire.ProjectSubjectPrefix+"1", nil))
	require.NoError(t, w.Flush())
	v.refused(t, "Publish", wire.ProjectSubjectPrefix+"1")
	v.call(t, "$JS.API.STREAM.CREATE.MALLORY", func(ctx context.Context) error {
		_, err := wjs.CreateStream(ctx, jetstream.StreamConfig{Name: "MALLORY", Subjects: []string{"mallory.>"}})
		return err
	})
	ws, err := wjs.Stream(ctx, wire.JobsStream)
	require.NoError(t, err, "a worker may read its lanes' streams' info")
	v.call(t, "$JS.API.STREAM.PURGE.EMBED_JOBS", func(ctx context.Context) error { return ws.Purge(ctx) })
	v.call(t, "$JS.API.STREAM.DELETE.EMBED_JOBS", func(ctx context.Context) error { return wjs.DeleteStream(ctx, wire.JobsStream) })
	v.call(t, "$JS.API.STREAM.UPDATE.EMBED_JOBS", func(ctx context.Context) error {
		_, err := wjs.UpdateStream(ctx, jetstream.StreamConfig{Name: wire.JobsStream, Subjects: []string{"mallory"}})
		return err
	})
	s, err := b.JS.Stream(ctx, wire.JobsStream)
	require.NoError(t, err)
	require.Equal(t, []string{wire.JobsSubject}, s.CachedInfo().Config.Subjects)
	_, err = b.JS.Stream(ctx, "MALLORY")
	require.ErrorIs(t, err, jetstream.ErrStreamNotFound)
}
