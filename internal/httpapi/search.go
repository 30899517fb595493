// The search routes: POST /search and GET /projects/{id}/similar.

package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/waywo/embed/embedclient"
	"github.com/waywo/embed/internal/prompt"
	"github.com/waywo/embed/internal/wire"
)

// How many results a search may ask for, and gets when it does not say.
const (
	MaxSearchK     = 100
	defaultSearchK = 10
	defaultSimilar = 5
)

// handleSearch embeds the query with the model's query instruction in the
// interactive lane (cached like any query), then answers the nearest
// projects.
func (s *Server) handleSearch(w http.ResponseWriter, r *http.Request) {
	if s.opts.Projects == nil {
		s.writeError(w, r, errSyncOff)
		return
	}
	h, err := s.admitBody(r)
	defer h.release()
	if err != nil {
		s.refuseUnread(w, r, err, s.writeError)
		return
	}
	body, err := s.readJSONBody(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	req, err := decodeSearchRequest(body, s.opts.Limits)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.admitDocuments(h, len(body), 1, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	q, err := s.embedDocs(r, wire.InputQuery, wire.LaneInteractive, []string{req.Query})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.answerSearch(w, r, "search", func(ctx context.Context) (embedclient.SearchResponse, error) {
		return s.opts.Projects.Search(ctx, q.Vectors[0], req.K, *req.ValidOnly)
	})
}

// handleSimilar answers the projects nearest to one project's own vector.
func (s *Server) handleSimilar(w http.ResponseWriter, r *http.Request) {
	if s.opts.Projects == nil {
		s.writeError(w, r, errSyncOff)
		return
	}
	id, err := wire.ParseProjectID(r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, badRequest("%v", err))
		return
	}
	k, validOnly, err := parseSimilar(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.answerSearch(w, r, "similar", func(ctx context.Context) (embedclient.SearchResponse, error) {
		return s.opts.Projects.Similar(ctx, id, k, validOnly)
	})
}

// answerSearch runs a search within the request's deadline, counts how
// long it took, and answers it.
func (s *Server) answerSearch(w http.ResponseWriter, r *http.Request, kind string, find func(context.Context) (embedclient.SearchResponse, error)) {
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.RequestTimeout)
	defer cancel()
	start := time.Now()
	out, err := find(ctx)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.opts.Metrics.Search(kind, time.Since(start))
	if out.Results == nil {
		out.Results = []embedclient.SearchResult{} // [] in JSON, never null
	}
	s.logFor(r).Debug("searched", zap.String("kind", kind), zap.Int("results", len(out.Results)),
		zap.Int("searched", out.Searched), zap.Int("stale", out.Stale), zap.Int("rescored", out.Rescored), zap.Duration("took", time.Since(start)))
	writeJSON(w, http.StatusOK, out)
}

// decodeSearchRequest validates a /search body: a non-blank "query"
// within EMBED_MAX_DOCUMENT_BYTES, an optional "k" from 1 to MaxSearchK,
// an optional boolean "valid_only" (true by default). Unknown fields are
// ignored, as everywhere.
func decodeSearchRequest(body []byte, l Limits) (embedclient.SearchRequest, error) {
	req := embedclient.SearchRequest{K: defaultSearchK}
	if !utf8.Valid(body) {
		return req, badRequest("body is not valid UTF-8")
	}
	raw, err := decodeObject(body, `{"query": "...", "k": 10}`)
	if err != nil {
		return req, err
	}
	q := bytes.TrimSpace(raw["query"])
	if len(q) == 0 || q[0] != '"' {
		return req, badRequest("\"query\" is required: a string, got %s", jsonKind(q))
	}
	if err := json.Unmarshal(q, &req.Query); err != nil {
		return req, badRequest("\"query\": %v", err)
	}
	switch {
	case len(req.Query) > l.MaxDocumentBytes:
		return req, tooLarge("\"query\" is %d bytes; at most %d (EMBED_MAX_DOCUMENT_BYTES)", len(req.Query), l.MaxDocumentBytes)
	case prompt.Blank(req.Query):
		return req, badRequest("\"query\" is empty (nothing but spaces, control or zero-width characters)")
	case strings.IndexByte(req.Query, 0) >= 0:
		return req, badRequest("\"query\" contains a NUL character")
	}
	if k := bytes.TrimSpace(raw["k"]); len(k) > 0 && string(k) != "null" {
		if err := json.Unmarshal(k, &req.K); err != nil || req.K < 1 || req.K > MaxSearchK {
			return req, badRequest("\"k\" must be a whole number from 1 to %d, got %s", MaxSearchK, truncateBytes(k, 40))
		}
	}
	valid := true
	if v := bytes.TrimSpace(raw["valid_only"]); len(v) > 0 && string(v) != "null" {
		if err := json.Unmarshal(v, &valid); err != nil {
			return req, badRequest("\"valid_only\" must be true or false, got %s", truncateBytes(v, 40))
		}
	}
	req.ValidOnly = &valid
	return req, nil
}

// parseSimilar reads ?k= (1 to MaxSearchK, 5 by default) and ?valid_only=
// (true by default) of GET /projects/{id}/similar.
func parseSimilar(r *http.Request) (k int, validOnly bool, err error) {
	k, validOnly = defaultSimilar, true
	q := r.URL.Query()
	if v := q.Get("k"); v != "" {
		if k, err = strconv.Atoi(v); err != nil || k < 1 || k > MaxSearchK {
			return 0, false, badRequest("k must be a whole number from 1 to %d, got %q", MaxSearchK, v)
		}
	}
	if v := q.Get("valid_only"); v != "" {
		if validOnly, err = strconv.ParseBool(v); err != nil {
			return 0, false, badRequest("valid_only must be true or false, got %q", v)
		}
	}
	return k, validOnly, nil
}
