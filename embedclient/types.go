package embedclient

// The wire types of the service's HTTP API, declared once: the server
// (internal/httpapi) writes them and this client reads them, as Ollama's
// api/types.go is shared by its server and client.

// EmbedRequest is the body of POST /embed.
type EmbedRequest struct {
	Documents []string `json:"documents"`
	// InputType is "document" (the default) or "query".
	InputType string `json:"input_type,omitempty"`
	// Priority is "interactive" (the default) or "bulk": bulk work (a
	// backfill, an import) never delays interactive requests.
	Priority string `json:"priority,omitempty"`
}

// EmbedResponse is the JSON answer of POST /embed: one vector per document,
// in input order.
type EmbedResponse struct {
	Embeddings [][]float32 `json:"embeddings"`
}

// ErrorResponse is every error answer of the service's own routes.
type ErrorResponse struct {
	Error     string `json:"error"`
	Code      string `json:"code"`
	RequestID string `json:"request_id"`
	// Reason is set on an unhealthy /health (503) instead of Error.
	Reason string `json:"reason,omitempty"`
}

// Health is the service's /health answer, 200 or 503.
type Health struct {
	Status      string `json:"status"`
	ModelLoaded bool   `json:"model_loaded"`
	Model       string `json:"model"`
	Dimensions  int    `json:"dimensions"`
	Workers     int    `json:"workers"`
	// ModelDigest and OllamaVersion fingerprint the served vector space:
	// vectors from another digest are not comparable with these.
	ModelDigest   string `json:"model_digest,omitempty"`
	OllamaVersion string `json:"ollama_version,omitempty"`
	Reason        string `json:"reason,omitempty"`
	// Degraded, on a healthy api, says what works with less redundancy
	// than configured (a stream's copy on a NATS server that is not
	// current): nothing fails, but one more fault might.
	Degraded string `json:"degraded,omitempty"`
}

// ProjectQueued is the answer of POST /projects/{id}/changed (202).
type ProjectQueued struct {
	ID     int64  `json:"id"`
	Status string `json:"status"` // "queued"
}

// SyncStatus is the answer of GET /projects/sync-status: projects counted
// by state.
type SyncStatus struct {
	Model       string `json:"model"`
	ModelDigest string `json:"model_digest,omitempty"` // what the workers serve now; rows of another are stale
	Dimensions  int    `json:"dimensions"`
	Total       int    `json:"total"`
	Embedded    int    `json:"embedded"`
	Stale       int    `json:"stale"`
	Pending     int    `json:"pending"`
	Failed      int    `json:"failed"`
	Queued      uint64 `json:"queued_events"`
	// QueueError says why Queued could not be read (the events stream
	// unavailable); the counts above come from the database and stand.
	QueueError string `json:"queue_error,omitempty"`
	// SyncError says why the sync is not running (its database cannot be
	// opened); /embed serves regardless.
	SyncError string `json:"sync_error,omitempty"`
	// Search is the search index over the stored vectors.
	Search *SearchIndex `json:"search,omitempty"`
	// Failures cannot be embedded as they stand; each waits for a change.
	Failures []FailedProject `json:"failed_projects"`
	// Retrying are pending or stale projects whose last attempt failed for
	// a passing reason (out of attempts during an outage, say); the
	// reconcile tries them again.
	Retrying []FailedProject `json:"retrying_projects"`
	// NextAfter, when set, is the project id to pass as ?after= for the
	// next page of both lists: together they hold at most ?limit= projects
	// per page, in id order.
	NextAfter int64 `json:"next_after,omitempty"`
}

// Page selects a page of SyncStatus's project lists.
type Page struct {
	After int64 // only projects with a larger id
	Limit int   // at most this many in both lists together
}

// FailedProject is one project with the reason it is not embedded.
type FailedProject struct {
	ID     int64  `json:"id"`
	Reason string `json:"reason"`
}

// SearchRequest is the body of POST /search.
type SearchRequest struct {
	Query string `json:"query"`
	// K is how many results to answer: 1 to 100, 10 when left out.
	K int `json:"k,omitempty"`
	// ValidOnly leaves out projects whose is_valid_project is not set; true
	// when left out.
	ValidOnly *bool `json:"valid_only,omitempty"`
}

// SearchResponse is the answer of POST /search and GET
// /projects/{id}/similar: the nearest projects, best first, by cosine
// similarity of their stored vectors (exactly as a scan of every vector
// would rank them).
type SearchResponse struct {
	Results []SearchResult `json:"results"`
	// ModelDigest is the model whose vectors were searched: rows with a
	// vector of another (Stale of them) were left out until the sync
	// re-embeds them.
	ModelDigest string `json:"model_digest,omitempty"`
	Searched    int    `json:"searched"` // rows that matched the filters
	Stale       int    `json:"stale"`
	// Rescored is how many rows were scored exactly from their stored
	// vectors after the first, compact pass.
	Rescored int `json:"rescored"`
}

// SearchResult is one project found.
type SearchResult struct {
	ID    int64   `json:"id"`
	Score float32 `json:"score"` // cosine similarity, -1 to 1
	Title string  `json:"title"`
}

// SearchIndex is the search index as GET /projects/sync-status reports it.
type SearchIndex struct {
	State string `json:"state"` // "loading", "ready" or "failed"
	Rows  int    `json:"rows"`  // indexed
	// Stale rows hold a vector of another model than the workers serve now.
	Stale       int     `json:"stale"`
	Loaded      int     `json:"loaded,omitempty"` // while loading: rows so far
	LoadSeconds float64 `json:"load_seconds,omitempty"`
	Error       string  `json:"error,omitempty"` // why its load failed (tried again at the next reconcile)
}
