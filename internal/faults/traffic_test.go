// Load on a cluster: clients, project events, and what became of them.

package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/prompt"
	"github.com/waywo/embed/internal/vector"
)

// tally counts /embed outcomes. hung: no answer within the request timeout
// plus a margin; wrong: a 200 with the wrong vectors or a 5xx other than
// 503/504.
type tally struct {
	sent, ok, refused, hung, wrong atomic.Int64
	mu                             sync.Mutex
	reasons                        map[string]int
	took                           []timed // every answered request
	// check, when set, says whether a 200's vectors are the model's of
	// its documents (otherwise only their count and length are checked).
	check func(docs []string, vecs [][]float32) bool
	// resend, when set, sends a request again, once, whose connection
	// closed before any answer, as the Go client does: at an api's stop a
	// connection the kernel accepted but the api never read is closed
	// unanswered (the race every TCP server has when it closes its
	// listener). resent counts them; a second such failure is lost.
	resend bool
	resent atomic.Int64
}

// timed is one request: when it was sent and how long its answer took.
type timed struct {
	at   time.Time
	took time.Duration
	ok   bool
}

// slowestRefusal is the longest a request sent after t waited for an
// answer other than 200.
func (ty *tally) slowestRefusal(t time.Time) (longest time.Duration) {
	ty.mu.Lock()
	defer ty.mu.Unlock()
	return ty.slowestRefusalSince(t)
}

// slowestRefusalLocked is slowestRefusal of every request, with mu held.
func (ty *tally) slowestRefusalLocked() time.Duration { return ty.slowestRefusalSince(time.Time{}) }

func (ty *tally) slowestRefusalSince(t time.Time) (longest time.Duration) {
	for _, r := range ty.took {
		if !r.ok && r.at.After(t) {
			longest = max(longest, r.took)
		}
	}
	return longest
}

// around returns the longest wait of the requests in flight at t, and the
// median of all successful ones.
func (ty *tally) around(t time.Time) (longest, median time.Duration) {
	ty.mu.Lock()
	defer ty.mu.Unlock()
	var oks []time.Duration
	for _, r := range ty.took {
		if r.at.Before(t) && r.at.Add(r.took).After(t) {
			longest = max(longest, r.took)
		}
		if r.ok {
			oks = append(oks, r.took)
		}
	}
	slices.Sort(oks)
	if len(oks) > 0 {
		median = oks[len(oks)/2]
	}
	return longest, median
}

func (ty *tally) note(reason string) {
	ty.mu.Lock()
	defer ty.mu.Unlock()
	if ty.reasons == nil {
		ty.reasons = map[string]int{}
	}
	ty.reasons[reason]++
}

// traffic drives /embed with clients looping until ctx ends; wait returns
// once every request in flight has its outcome.
func (c *cluster) traffic(ctx context.Context, clients int) (ty *tally, wait func()) {
	return c.trafficOf(ctx, clients, &tally{})
}

// trafficOf is traffic counted in ty, whose settings it keeps.
func (c *cluster) trafficOf(ctx context.Context, clients int, ty *tally) (*tally, func()) {
	hc := &http.Client{Timeout: c.opts.requestTimeout + 10*time.Second}
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			for ctx.Err() == nil {
				n := 1 + rng.IntN(3)
				docs := make([]string, n)
				for j := range docs {
					docs[j] = ollamatest.Sentence(rng.Uint64(), 8)
				}
				// A polite client: it waits as Retry-After says, or a
				// moment when the api is not there.
				if wait := c.embedOnce(hc, ty, docs); wait > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(wait):
					}
				}
			}
		})
	}
	return ty, wg.Wait
}

// embedOnce sends one request, counts its outcome and says how long to
// wait before the next.
func (c *cluster) embedOnce(hc *http.Client, ty *tally, docs []string) time.Duration {
	return c.embedAs(hc, ty, docs, "")
}

// embedAs is embedOnce in a lane: priority "" (interactive) or "bulk".
func (c *cluster) embedAs(hc *http.Client, ty *tally, docs []string, priority string) time.Duration {
	ty.sent.Add(1)
	return c.send(hc, ty, docs, priority, ty.resend)
}

func (c *cluster) send(hc *http.Client, ty *tally, docs []string, priority string, resend bool) time.Duration {
	req := map[string]any{"documents": docs}
	if priority != "" {
		req["priority"] = priority
	}
	body, _ := json.Marshal(req)
	start := time.Now()
	hreq, err := http.NewRequest(http.MethodPost, c.apiURL+"/embed", strings.NewReader(string(body)))
	if err != nil {
		panic(err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	// Embedding is idempotent, and says so as HTTP clients expect: Go's
	// transport then sends a request again when the keep-alive connection
	// it reused was closed by a stopping api before the request was read
	// (the race every HTTP/1.1 server has). A connection that dies under a
	// request on a fresh connection, or after the api read it, still
	// counts as a lost request.
	hreq.Header.Set("Idempotency-Key", strconv.FormatInt(ty.sent.Load(), 10))
	resp, err := hc.Do(hreq)
	if err == nil {
		defer func() {
			ty.mu.Lock()
			ty.took = append(ty.took, timed{at: start, took: time.Since(start), ok: resp.StatusCode == http.StatusOK})
			ty.mu.Unlock()
		}()
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		ty.hung.Add(1)
		ty.note("hung")
		return 0
	case errors.Is(err, syscall.ECONNREFUSED): // no api listening: never sent
		ty.refused.Add(1)
		ty.note("unreachable")
		return 200 * time.Millisecond
	case err != nil && resend:
		ty.resent.Add(1)
		return c.send(hc, ty, docs, priority, false)
	case err != nil: // sent, and the connection died under it: a lost request
		ty.wrong.Add(1)
		ty.note("dropped: " + err.Error())
		return 0
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out struct {
		Embeddings [][]float32 `json:"embeddings"`
		Error      string      `json:"error"`
	}
	if json.Unmarshal(raw, &out) != nil {
		ty.wrong.Add(1)
		ty.note(fmt.Sprintf("%d unreadable", resp.StatusCode))
		return 0
	}
	switch {
	case resp.StatusCode == http.StatusOK && len(out.Embeddings) == len(docs) && len(out.Embeddings[0]) == c.ollama.Dims &&
		(ty.check == nil || ty.check(docs, out.Embeddings)):
		ty.ok.Add(1)
	case resp.StatusCode == http.StatusOK:
		ty.wrong.Add(1)
		ty.note("200 with wrong vectors")
	case out.Error == "" || resp.StatusCode == http.StatusInternalServerError:
		ty.wrong.Add(1)
		ty.note(fmt.Sprintf("%d %s", resp.StatusCode, out.Error))
	default:
		ty.refused.Add(1)
		ty.note(strconv.Itoa(resp.StatusCode))
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			return time.Duration(secs) * time.Second
		}
	}
	return 0
}

// steady runs clients and the backend's events (one every 50 ms) until at
// least ok requests succeeded and more than sent events were sent, then
// stops both and returns what became of them.
func (c *cluster) steady(clients int, ok, sent int64, limit time.Duration) (*tally, *events) {
	c.t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	ty, waitTraffic := c.traffic(ctx, clients)
	ev, waitEvents := c.events(ctx, 50*time.Millisecond)
	require.Eventually(c.t, func() bool { return ty.ok.Load() > ok && ev.sent.Load() > sent }, limit, 10*time.Millisecond)
	stop()
	waitTraffic()
	waitEvents()
	return ty, ev
}

// events plays the backend: it changes project texts and publishes their
// events until ctx ends. An event counts as sent once JetStream stored it;
// during an outage the backend retries, as a careful one would.
type events struct {
	sent atomic.Int64
	mu   sync.Mutex
	// texts are the descriptions each project was given, in order; acked
	// counts each project's events JetStream stored.
	texts map[int][]string
	acked map[int]int
}

func (c *cluster) events(ctx context.Context, every time.Duration) (ev *events, wait func()) {
	ev = &events{texts: map[int][]string{}, acked: map[int]int{}}
	var wg sync.WaitGroup
	wg.Go(func() {
		version := uint64(1000)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for id := 1; ctx.Err() == nil; id = id%c.projects + 1 {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			version++
			text := ollamatest.Sentence(version, 10)
			if _, err := c.raw.ExecContext(ctx, "UPDATE waywo_projects SET description = ? WHERE id = ?", text, id); err != nil {
				continue // ctx ended while the file was locked
			}
			ev.mu.Lock()
			ev.texts[id] = append(ev.texts[id], text)
			ev.mu.Unlock()
			for ctx.Err() == nil {
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := c.js.Publish(pctx, fmt.Sprintf("waywo.projects.changed.%d", id), nil)
				cancel()
				if err == nil {
					ev.sent.Add(1)
					ev.mu.Lock()
					ev.acked[id]++
					ev.mu.Unlock()
					break
				}
			}
		}
	})
	return ev, wg.Wait
}

// settle waits until every project's blob is the model's vector of its
// current text, checking every 100 ms, and returns how many are not when
// limit passes.
func (c *cluster) settle(limit time.Duration) (lost int) {
	c.t.Helper()
	return len(c.unsettled(limit))
}

// unsettled is settle's list: the projects that do not hold the model's
// vector of their current text once limit passes.
func (c *cluster) unsettled(limit time.Duration) (lost []int) {
	c.t.Helper()
	refs := map[string][]float32{}
	deadline := time.After(limit)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		lost = lost[:0]
		for id := 1; id <= c.projects; id++ {
			var title, desc, tags string
			var blob []byte
			require.NoError(c.t, c.raw.QueryRow("SELECT title, description, hashtags, description_embedding FROM waywo_projects WHERE id = ?", id).Scan(&title, &desc, &tags, &blob))
			text := prompt.ProjectText(title, desc, []string{"faults"})
			ref, ok := refs[text]
			if !ok {
				out, err := c.direct.EmbedAll(context.Background(), []string{text})
				require.NoError(c.t, err)
				ref = out.Vectors[0]
				refs[text] = ref
			}
			v, err := vector.Decode(blob, c.ollama.Dims)
			if blob == nil || err != nil || ollamatest.Cosine(v, ref) < 0.9999 {
				lost = append(lost, id)
			}
		}
		if len(lost) == 0 {
			return nil
		}
		select {
		case <-deadline:
			return lost
		case <-tick.C:
		}
	}
}

// ackPending is how many jobs workers hold unacknowledged right now.
func (c *cluster) ackPending() int {
	cons, err := c.admin.Consumer(context.Background(), "EMBED_JOBS", "embed-workers")
	if err != nil {
		return 0
	}
	info, err := cons.Info(context.Background())
	if err != nil {
		return 0
	}
	return info.NumAckPending
}
