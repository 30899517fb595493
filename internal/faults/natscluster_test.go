package faults

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/dispatch"
	"github.com/waywo/embed/internal/wire"
)

// streamInfo reads a stream's info within a second.
func (c *cluster) streamInfo(name string) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s, err := c.admin.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

func (c *cluster) node(name string) int {
	for i, n := range c.nodes {
		if n.name == name {
			return i
		}
	}
	c.t.Fatalf("no nats-server named %q", name)
	return -1
}

// logLines counts the lines a process has logged so far (its restarts'
// included).
func logLines(path string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), "\n")
}

// 7. A 3-node JetStream cluster, every stream R3 (EMBED_STREAM_REPLICAS
// auto). kill -9 the jobs stream's leader under load: a new one is elected,
// /embed serves again, nothing accepted is lost, nothing hangs. Then two of
// three servers down (no quorum): /health says why, the worker and the
// sync wait quietly (backoff, one log line) instead of spinning, and
// sync-status still answers; everything resumes when they return.
func natsClusterFaults(t *testing.T) {
	c := newCluster(t, clusterOptions{natsNodes: 3})
	for _, name := range []string{wire.JobsStream, wire.ProjectsStream, wire.DeadLetterStream} {
		// The sync creates its events stream in the background while the
		// api already serves /embed; on a forming cluster that can come
		// after the api is healthy.
		var info *jetstream.StreamInfo
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			var err error
			info, err = c.streamInfo(name)
			require.NoError(ct, err)
		}, 30*time.Second, 100*time.Millisecond, "stream %s created", name)
		require.Equal(t, 3, info.Config.Replicas, "%s replicas", name)
	}
	// An api told 1 replica does not lower an existing stream's 3.
	_, err := dispatch.EnsureJobsStream(context.Background(), c.admin, wire.LaneInteractive, wire.StreamLimits{MaxMsgs: 100_000, MaxBytes: 1 << 30}, broker.Placement{Replicas: 1})
	require.NoError(t, err)
	info, err := c.streamInfo(wire.JobsStream)
	require.NoError(t, err)
	require.Equal(t, 3, info.Config.Replicas)

	ctx, stop := context.WithCancel(context.Background())
	ty, waitTraffic := c.traffic(ctx, 4)
	ev, waitEvents := c.events(ctx, 50*time.Millisecond)
	require.Eventually(t, func() bool { return ty.ok.Load() > 10 && ev.sent.Load() > 5 }, 30*time.Second, 10*time.Millisecond)

	leader := info.Cluster.Leader
	i := c.node(leader)
	c.nodes[i].proc.Kill()
	killed := time.Now()
	var elected time.Duration
	require.Eventually(t, func() bool {
		info, err := c.streamInfo(wire.JobsStream)
		if err == nil && info.Cluster != nil && info.Cluster.Leader != "" && info.Cluster.Leader != leader {
			elected = time.Since(killed)
			return true
		}
		return false
	}, 30*time.Second, 20*time.Millisecond, "a new leader of %s", wire.JobsStream)
	okAt := ty.ok.Load()
	require.Eventually(t, func() bool { return ty.ok.Load() > okAt }, 30*time.Second, 5*time.Millisecond, "/embed serves again")
	served := time.Since(killed)
	longest, median := ty.around(killed)
	c.startNode(i)

	// No quorum: two of three down for 10 s.
	down := []int{(i + 1) % 3, (i + 2) % 3}
	workerLog := c.workers[0].Name
	apiCPU, workerCPU := c.api.Usage().CPUSeconds, c.workers[0].Usage().CPUSeconds
	workerLines := logLines(c.dir + "/" + workerLog + ".log")
	for _, j := range down {
		c.nodes[j].proc.Kill()
	}
	var reason string
	require.Eventually(t, func() bool {
		var s int
		s, reason = c.health()
		return s == http.StatusServiceUnavailable
	}, 20*time.Second, 20*time.Millisecond, "/health notices the stream is gone")
	start := time.Now()
	hc := http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get(c.apiURL + "/projects/sync-status")
	require.NoError(t, err, "sync-status answers")
	resp.Body.Close()
	statusTook := time.Since(start)
	window := time.Now()
	<-time.After(10 * time.Second) // the measured window of the outage
	secs := time.Since(window).Seconds()
	apiShare := (c.api.Usage().CPUSeconds - apiCPU) / secs
	workerShare := (c.workers[0].Usage().CPUSeconds - workerCPU) / secs
	lines := logLines(c.dir+"/"+workerLog+".log") - workerLines
	for _, j := range down {
		c.startNode(j)
	}
	c.waitHealthy(60 * time.Second)
	okAfter := ty.ok.Load()
	require.Eventually(t, func() bool { return ty.ok.Load() > okAfter+10 }, 60*time.Second, 10*time.Millisecond, "traffic resumes")
	stop()
	waitTraffic()
	waitEvents()

	t.Logf("leader %s killed: new leader after %s, first 200 after %s; longest request in flight %s (median %s)",
		leader, elected, served, longest, median)
	t.Logf("no quorum: /health %q; sync-status in %s; CPU api %.1f%% worker %.1f%% of a core; worker log lines %d", reason, statusTook, 100*apiShare, 100*workerShare, lines)
	require.Less(t, apiShare, 0.15, "the api does not spin while the streams are gone")
	require.Less(t, workerShare, 0.15, "the worker does not spin while the streams are gone")
	require.Less(t, lines, 40, "the worker logs the outage, not every failed fetch")
	require.Less(t, statusTook, 5*time.Second)
	record(t, "NATS cluster: leader killed, then quorum lost", ty, ev, c.projects, c.settle(90*time.Second),
		fmt.Sprintf("R3; new jobs-stream leader %s after the kill, first 200 after %s, longest request in flight %s (median %s); quorum lost 10 s: CPU api %.1f%% worker %.1f%% of a core, worker %d log lines, sync-status in %s",
			elected.Round(10*time.Millisecond), served.Round(10*time.Millisecond), longest.Round(10*time.Millisecond), median.Round(time.Millisecond),
			100*apiShare, 100*workerShare, lines, statusTook.Round(time.Millisecond)))
}
