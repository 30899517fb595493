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
// most MaxDocs documents and, when MaxTokens is set, about MaxTokens tokens
// (each item's estimate), and is the policy that decides when a batch goes
// to the model (Decide). It is a plain value with no goroutines: the worker
// loop adds, asks the policy, and flushes. An item larger than either limit
// on its own is still accepted into an empty batch; the model client
// splits its call.
type Batcher[T any] struct {
	maxDocs   int
	maxTokens int // 0: documents only
	wait      time.Duration
	now       func() time.Time

	items   []T
	docs    int
	tokens  int
	started time.Time
}

// NewBatcher returns a batcher. maxTokens 0 limits documents only. now is
// the clock (time.Now outside tests).
func NewBatcher[T any](maxDocs, maxTokens int, wait time.Duration, now func() time.Time) *Batcher[T] {
	if maxDocs < 1 {
		maxDocs = 1
	}
	return &Batcher[T]{maxDocs: maxDocs, maxTokens: max(maxTokens, 0), wait: wait, now: now}
}

// Add puts an item of docs documents and about tokens tokens into the
// batch. It returns false, and keeps nothing, when the item does not fit a
// non-empty batch: the caller holds it for the next one.
func (b *Batcher[T]) Add(item T, docs, tokens int) bool {
	if !b.Fits(docs, tokens) {
		return false
	}
	if len(b.items) == 0 {
		b.started = b.now()
	}
	b.items = append(b.items, item)
	b.docs += docs
	b.tokens += tokens
	return true
}

// Fits says whether an item of docs documents and tokens tokens would go
// into the batch now: an empty batch takes any item.
func (b *Batcher[T]) Fits(docs, tokens int) bool {
	if len(b.items) == 0 {
		return true
	}
	return b.docs+docs <= b.maxDocs && (b.maxTokens == 0 || b.tokens+tokens <= b.maxTokens)
}

// Len is the number of items in the batch.
func (b *Batcher[T]) Len() int { return len(b.items) }

// Room is how many more documents fit.
func (b *Batcher[T]) Room() int { return max(0, b.maxDocs-b.docs) }

// Full reports whether no further document fits, or the token budget is
// spent.
func (b *Batcher[T]) Full() bool {
	return b.docs >= b.maxDocs || (b.maxTokens > 0 && b.tokens >= b.maxTokens)
}

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
	b.items, b.docs, b.tokens = nil, 0, 0
	return items
}
