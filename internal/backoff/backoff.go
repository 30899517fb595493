// Package backoff is the one retry-delay scheme of the tree: exponential,
// capped, optionally jittered. The worker's retries of failed jobs, the
// sync's of failed events and reindex batches, the fetch loops of an
// unavailable stream and the writes to a locked SQLite file all wait by it.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy waits First after the first failed attempt, doubling with each
// attempt after, at most Max. With Jitter each delay is drawn from its
// upper half, so that loops that failed together do not retry together.
type Policy struct {
	First, Max time.Duration
	Jitter     bool
}

// Delay is the wait after attempt (1 for the first) failed.
func (b Policy) Delay(attempt int) time.Duration {
	d := min(b.First<<min(max(attempt-1, 0), 16), b.Max)
	if b.Jitter {
		d = d/2 + rand.N(d/2+1)
	}
	return d
}
