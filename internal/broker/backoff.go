package broker

import (
	"math/rand/v2"
	"time"
)

// Backoff is the one retry-delay scheme of the tree: First before the
// second attempt, doubling with each attempt after, at most Max. With
// Jitter each delay is drawn from its upper half, so that loops that
// failed together do not retry together.
type Backoff struct {
	First, Max time.Duration
	Jitter     bool
}

// Delay is the wait after attempt (1 for the first) failed.
func (b Backoff) Delay(attempt int) time.Duration {
	d := min(b.First<<min(max(attempt-1, 0), 16), b.Max)
	if b.Jitter {
		d = d/2 + rand.N(d/2+1)
	}
	return d
}
