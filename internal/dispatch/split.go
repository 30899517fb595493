package dispatch

import "fmt"

// replyOverhead is what headers take in a reply or job message, generously.
const replyOverhead = 4 << 10

// DocumentError names the document a failure belongs to, as an index into
// the request's documents.
type DocumentError struct {
	Index int
	Err   error
}

func (e *DocumentError) Error() string { return fmt.Sprintf("document %d: %v", e.Index, e.Err) }

func (e *DocumentError) Unwrap() error { return e.Err }

// Split cuts docs into jobs that fit maxPayload both ways: the documents
// going out and the vectors coming back; with maxDocs > 0, of at most
// that many documents too.
func Split(docs []string, dims int, maxPayload int64, maxDocs int) ([][2]int, error) {
	perJob := int((maxPayload - replyOverhead) / int64(dims*4))
	if maxDocs > 0 {
		perJob = min(perJob, maxDocs)
	}
	budget := int(maxPayload - replyOverhead)
	var spans [][2]int
	start, bytes := 0, 0
	for i, d := range docs {
		size := len(d) + 10 // uvarint length, generously
		if size > budget {
			return nil, &DocumentError{Index: i, Err: fmt.Errorf("%w: %d bytes, the queue carries at most %d per document", ErrTooLarge, len(d), budget-10)}
		}
		if i > start && (i-start >= perJob || bytes+size > budget) {
			spans = append(spans, [2]int{start, i})
			start, bytes = i, 0
		}
		bytes += size
	}
	if len(docs) > start {
		spans = append(spans, [2]int{start, len(docs)})
	}
	return spans, nil
}
