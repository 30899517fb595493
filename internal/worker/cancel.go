// Cancelled requests: jobs whose requester stopped waiting are dropped
// before they reach the model.

package worker

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// cancelMemory is how long a cancelled request id is remembered: longer
// than any job of it can wait in the queue (requests time out sooner).
const cancelMemory = 10 * time.Minute

// cancels are the request ids announced on wire.CancelSubject.
type cancels struct {
	now func() time.Time

	mu  sync.Mutex
	ids map[string]time.Time // id → when to forget it
}

func newCancels(now func() time.Time) *cancels {
	return &cancels{now: now, ids: map[string]time.Time{}}
}

func (c *cancels) onCancel(m *nats.Msg) {
	id := string(m.Data)
	if id == "" || len(id) > 128 {
		return
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.ids) >= 1024 {
		for k, until := range c.ids {
			if now.After(until) {
				delete(c.ids, k)
			}
		}
	}
	c.ids[id] = now.Add(cancelMemory)
}

// has says whether request id was cancelled.
func (c *cancels) has(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.ids[id]
	return ok
}
