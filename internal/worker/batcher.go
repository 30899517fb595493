package worker

import "time"

// FlushReason says why a batch left the batcher; it is counted in metrics and
// logged with each model call.
type FlushReason string

const (
	FlushFull  FlushReason = "full"  // the document limit was reached
	FlushWait  FlushReason = "wait"  // EMBED_BATCH_WAIT elapsed since the first document
	FlushDrain FlushReason = "drain" // the queue had nothing more right now
)

// Batcher groups items (jobs of one or more documents) into batches of at
// most MaxDocs documents, and is the policy that decides when a batch goes
// to the model (Decide). It is a plain value with no goroutines: the worker
// loop adds, asks the policy, and flushes. An item larger than
// MaxDocs on its own is still accepted into an empty batch; the model client
// splits its call.
type Batcher[T any] struct {
	maxDocs int
	wait    time.Duration
	now     func() time.Time

	items   []T
	docs    int
	started time.Time
}

// NewBatcher returns a batcher. now is the clock (time.Now outside tests).
func NewBatcher[T any](maxDocs int, wait time.Duration, now func() time.Time) *Batcher[T] {
	if maxDocs < 1 {
		maxDocs = 1
	}
	return &Batcher[T]{maxDocs: maxDocs, wait: wait, now: now}
}

// Add puts an item of docs documents into the batch. It returns false, and
// keeps nothing, when the item does not fit a non-empty batch: the caller
// holds it for the next one.
func (b *Batcher[T]) Add(item T, docs int) bool {
	if len(b.items) > 0 && b.docs+docs > b.maxDocs {
		return false
	}
	if len(b.items) == 0 {
		b.started = b.now()
	}
	b.items = append(b.items, item)
	b.docs += docs
	return true
}

// Len is the number of items in the batch.
func (b *Batcher[T]) Len() int { return len(b.items) }

// Room is how many more documents fit.
func (b *Batcher[T]) Room() int { return max(0, b.maxDocs-b.docs) }

// Full reports whether no further document fits.
func (b *Batcher[T]) Full() bool { return b.docs >= b.maxDocs }

// Until is how much longer the batch may wait for more documents: zero when
// the wait is over or the batch is empty.
func (b *Batcher[T]) Until() time.Duration {
	if len(b.items) == 0 {
		return 0
	}
	return max(0, b.wait-b.now().Sub(b.started))
}

// Decide is the batch policy: whether the batch goes to the model now, and
// why. It goes full when no further document fits or an item is held for
// the next batch (overflow); after lingering for more (waited), for the
// wait; otherwise, while EMBED_BATCH_WAIT leaves time since its first
// document, linger says how long to wait for more before it goes; else it
// goes because the queue had nothing more.
func (b *Batcher[T]) Decide(overflow, waited bool) (reason FlushReason, linger time.Duration) {
	switch {
	case b.Full() || overflow:
		return FlushFull, 0
	case waited:
		return FlushWait, 0
	}
	if wait := b.Until(); wait > 0 {
		return FlushWait, wait
	}
	return FlushDrain, 0
}

// Items are the batch's items so far; the slice is the batcher's own.
func (b *Batcher[T]) Items() []T { return b.items }

// Flush empties the batcher and returns its items in the order added.
func (b *Batcher[T]) Flush() []T {
	items := b.items
	b.items, b.docs = nil, 0
	return items
}
