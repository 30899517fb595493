// The interactive lane's open pulls: a worker keeps one open at the
// priority its state calls for, and the queries that arrive through them
// are with the dispatcher when an endpoint frees, so that the next batch is
// formed without a round trip to the server.

package worker

import (
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/waywo/embed/internal/wire"
)

const (
	// standingWait is how long one standing pull stays open; it is renewed
	// while the endpoints stay busy. Stopping waits for the last to end.
	standingWait = 250 * time.Millisecond
	// standingMargin is how long before its end a pull stops counting as
	// open: the server may end it a little before the worker hears so.
	standingMargin = 5 * time.Millisecond
	// standingMax is the most queries a worker holds for its next batches.
	standingMax = 16
)

// openPull is one pull on the interactive lane; mb is nil when none is open.
type openPull struct {
	mb    jetstream.MessageBatch
	want  int       // messages asked for
	got   int       // messages received
	until time.Time // it counts as open until then
}

// arrivals is the pull's messages; nil, never ready, when none is open.
func (p *openPull) arrivals() <-chan jetstream.Msg {
	if p.mb == nil {
		return nil
	}
	return p.mb.Messages()
}

// received notes a receive from arrivals: a message, or the end of the pull.
func (p *openPull) received(ok bool) {
	if !ok {
		p.mb = nil
		return
	}
	p.got++
}

// job notes a receive from arrivals and decodes its message: nil for the
// end of the pull and for a job dropped at once (see Worker.accept).
func (p *openPull) job(w *Worker, m jetstream.Msg, ok bool) *pending {
	p.received(ok)
	if !ok {
		return nil
	}
	return w.accept(m, wire.LaneInteractive)
}

// pulls are the interactive lane's open pulls. Only the dispatcher uses
// them.
//
// On a prioritized consumer (nats-server 2.12 and later) a worker with an
// endpoint free waits through free: one query at wire.PullIdle; a worker
// whose endpoints are all busy keeps busy open: up to standingMax queries at
// wire.PullBusy, below every free worker's pull, so that a query comes to
// a busy worker only while no free one asks for it. Both may be open at
// once (a worker that frees while its busy pull runs); arrivals of both go
// to the lanes. On an older server only free is used, without priorities.
type pulls struct {
	cons        jetstream.Consumer
	now         func() time.Time
	prioritized bool

	free, busy openPull
}

// options are a pull's options: its wait and, when prioritized, its group
// and priority.
func (s *pulls) options(wait time.Duration, priority int) []jetstream.FetchOpt {
	opts := []jetstream.FetchOpt{jetstream.FetchMaxWait(wait)}
	if s.prioritized {
		opts = append(opts, jetstream.FetchPriorityGroup(wire.WorkersPriorityGroup), jetstream.FetchPrioritized(uint8(priority)))
	}
	return opts
}

func (s *pulls) open(p *openPull, n int, wait time.Duration, priority int) error {
	if p.mb != nil || n <= 0 {
		return nil
	}
	sent := s.now()
	mb, err := s.cons.Fetch(n, s.options(wait, priority)...)
	if err != nil {
		return err
	}
	*p = openPull{mb: mb, want: n, until: sent.Add(wait - standingMargin)}
	return nil
}

// openFree opens the free worker's pull of one query for up to wait,
// unless it is open.
func (s *pulls) openFree(wait time.Duration) error { return s.open(&s.free, 1, wait, wire.PullIdle) }

// openBusy opens the busy worker's standing pull of up to n queries, unless
// it is open; on an unprioritized consumer it opens none.
func (s *pulls) openBusy(n int) error {
	if !s.prioritized {
		return nil
	}
	return s.open(&s.busy, n, standingWait, wire.PullBusy)
}

// covers says the lane holds nothing that the open pulls would not bring:
// one is open and has room, so every query published is delivered to it or
// to another worker's pull.
func (s *pulls) covers() bool {
	now := s.now()
	for _, p := range []*openPull{&s.free, &s.busy} {
		if p.mb != nil && p.got < p.want && now.Before(p.until) {
			return true
		}
	}
	return false
}

// take returns up to n messages the open pulls have brought, without
// waiting.
func (s *pulls) take(n int) []jetstream.Msg {
	var out []jetstream.Msg
	for _, p := range []*openPull{&s.free, &s.busy} {
		for len(out) < n && p.poll(&out) {
		}
	}
	return out
}

// poll receives what the pull has brought without waiting, adding a
// message to out; it says whether there was anything (a message or the
// pull's end).
func (p *openPull) poll(out *[]jetstream.Msg) bool {
	select {
	case m, ok := <-p.arrivals():
		p.received(ok)
		if ok {
			*out = append(*out, m)
		}
		return true
	default:
		return false
	}
}

// stop waits for the open pulls to end (within their wait) and returns the
// messages they brought that were not taken, for the caller to hand back.
func (s *pulls) stop() []jetstream.Msg {
	var out []jetstream.Msg
	for _, p := range []*openPull{&s.free, &s.busy} {
		for p.mb != nil {
			m, ok := <-p.arrivals()
			p.received(ok)
			if ok {
				out = append(out, m)
			}
		}
	}
	return out
}

// serverAtLeast says whether a nats-server version ("2.12.1", "v2.12.0-RC.1")
// is major.minor or later.
func serverAtLeast(version string, major, minor int) bool {
	parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || (ma == major && mi >= minor)
}
