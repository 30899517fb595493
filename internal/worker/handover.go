// Handover: sending a serial server its next call just before it finishes
// the one it computes, so that it does not sit idle while its answer
// travels to the worker and the next call travels back.

package worker

import (
	"sync"
	"time"
)

// callCost learns what a call costs a server that computes one input at a
// time: a cost per input and a cost per (estimated) token, fitted by least
// squares over the recent calls it computed, the older weighing less.
type callCost struct {
	snn, snt, stt, sny, sty float64 // decayed sums of inputs n, tokens t, seconds y
	calls                   int
}

// costDecay is how much a call's weight falls with each later one: the
// last ten or so calls count.
const costDecay = 0.9

// learn notes that a call of inputs inputs and about tokens tokens took
// took to compute.
func (c *callCost) learn(inputs, tokens int, took time.Duration) {
	if inputs <= 0 || took <= 0 {
		return
	}
	n, t, y := float64(inputs), float64(max(tokens, 0)), took.Seconds()
	c.snn = costDecay*c.snn + n*n
	c.snt = costDecay*c.snt + n*t
	c.stt = costDecay*c.stt + t*t
	c.sny = costDecay*c.sny + n*y
	c.sty = costDecay*c.sty + t*y
	c.calls++
}

// minCostCalls is how many computed calls the cost needs before it
// predicts.
const minCostCalls = 3

// predict is what a call of inputs inputs and about tokens tokens will
// take to compute; ok is false until enough calls were seen. Where the
// recent calls cannot tell the two costs apart (all alike in tokens per
// input) or a cost would come out negative, it is the cost per input alone.
func (c *callCost) predict(inputs, tokens int) (time.Duration, bool) {
	if c.calls < minCostCalls || c.snn == 0 {
		return 0, false
	}
	n, t := float64(inputs), float64(max(tokens, 0))
	perInput := c.sny / c.snn
	y := perInput * n
	if det := c.snn*c.stt - c.snt*c.snt; det > 1e-9*c.snn*c.stt {
		a := (c.sny*c.stt - c.snt*c.sty) / det
		b := (c.snn*c.sty - c.snt*c.sny) / det
		if a >= 0 && b >= 0 {
			y = a*n + b*t
		}
	}
	return time.Duration(y * float64(time.Second)), true
}

// pace is one endpoint's record of the calls it has been sent: what they
// cost, and the latest call still computing, which a call sent meanwhile
// queues behind.
//
// The cost learned from calls sent to an idle server includes the trip
// there and back, so alone it would hand over late; skew corrects what the
// cost leaves: each computed call moves it by half the difference between
// lead and how long before the call computed its handover was due.
type pace struct {
	lead time.Duration // how early the next call goes; 0: handover off

	mu     sync.Mutex
	cost   callCost
	skew   time.Duration // how much earlier than cost and lead say the handover goes
	latest *pacedCall
}

// maxSkew bounds skew, in leads either way.
const maxSkew = 5

// pacedCall is one call on a paced endpoint.
type pacedCall struct {
	p              *pace
	sent           time.Time
	inputs, tokens int
	// prev is the call the server computes before this one, nil when it
	// had none computing when this was sent; guarded by p.mu and dropped
	// once this call has computed.
	prev *pacedCall
	// behind: the server was computing another call when this was sent.
	behind   bool
	done     chan struct{} // closed once the server has computed it, or it ended
	computed time.Time     // when done closed
	due      time.Time     // when its handover is due; zero when none is
}

// begin records a call of inputs inputs and about tokens tokens sent now.
func (p *pace) begin(now time.Time, inputs, tokens int) *pacedCall {
	c := &pacedCall{p: p, sent: now, inputs: inputs, tokens: tokens, done: make(chan struct{})}
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.latest; l != nil {
		select {
		case <-l.done:
		default:
			c.prev, c.behind = l, true
		}
	}
	p.latest = c
	return c
}

// start is when the server began computing c: when it was sent, or when
// the call before it had computed. Called with p.mu held.
func (c *pacedCall) start() time.Time {
	if c.prev != nil && c.prev.computed.After(c.sent) {
		return c.prev.computed
	}
	return c.sent
}

// end notes that the call has ended at now; ok says the server computed
// it (its answer began), so that what it took is learned.
func (c *pacedCall) end(now time.Time, ok bool) {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	select {
	case <-c.done:
		return
	default:
	}
	if ok && (c.prev == nil || !c.prev.computed.IsZero()) {
		c.p.cost.learn(c.inputs, c.tokens, now.Sub(c.start()))
	}
	if ok && !c.due.IsZero() {
		lead := c.p.lead
		c.p.skew += (lead - now.Sub(c.due)) / 2
		c.p.skew = min(max(c.p.skew, -maxSkew*lead), maxSkew*lead)
	}
	c.computed = now
	c.prev = nil
	close(c.done)
}

// handOver runs free once the server is about lead from finishing c — when
// c started (sent, or after the call before it computed) plus what the
// learned cost says c takes, less lead — unless c computes or ends first.
// It returns at once when handover is off or the cost is not known yet.
func (c *pacedCall) handOver(now func() time.Time, free func()) {
	p := c.p
	if p.lead <= 0 {
		return
	}
	p.mu.Lock()
	prev := c.prev
	d, ok := p.cost.predict(c.inputs, c.tokens)
	p.mu.Unlock()
	if !ok || d <= p.lead {
		return
	}
	if prev != nil {
		select {
		case <-prev.done:
		case <-c.done:
			return
		}
	}
	due, ok := c.plan(d)
	if !ok {
		return
	}
	t := time.NewTimer(due.Sub(now()))
	defer t.Stop()
	select {
	case <-t.C:
		free()
	case <-c.done:
	}
}

// plan sets when c's handover is due, c being expected to compute in d
// once started: lead (and skew) before that, and not before half of d. It
// says false when c has already ended.
func (c *pacedCall) plan(d time.Duration) (time.Time, bool) {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-c.done:
		return time.Time{}, false
	default:
	}
	at := c.start()
	c.due = at.Add(max(d-p.lead-p.skew, d/2))
	return c.due, true
}
