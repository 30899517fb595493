package httpapi

import (
	"context"
	"net/http"
	"strconv"

	"go.uber.org/zap"

	"github.com/waywo/embed/embedclient"
	"github.com/waywo/embed/internal/wire"
)

var errSyncOff = &requestError{http.StatusNotFound, "project sync is off in this api (EMBED_SYNC=false)"}

// handleProjectChanged queues a sync of one project: the HTTP twin of
// publishing waywo.projects.changed.<id>. 202 once the event is stored;
// whether the project exists is the sync's business, as for the event.
func (s *Server) handleProjectChanged(w http.ResponseWriter, r *http.Request) {
	if s.opts.Projects == nil {
		s.writeError(w, r, errSyncOff)
		return
	}
	id, err := wire.ParseProjectID(r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, badRequest("%v", err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.RequestTimeout)
	defer cancel()
	if err := s.opts.Projects.Changed(ctx, id); err != nil {
		s.logFor(r).Warn("could not queue project sync", zap.Int64("project_id", id), zap.Error(err))
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, embedclient.ProjectQueued{ID: id, Status: "queued"})
}

func (s *Server) handleSyncStatus(w http.ResponseWriter, r *http.Request) {
	if s.opts.Projects == nil {
		s.writeError(w, r, errSyncOff)
		return
	}
	page, err := parsePage(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.RequestTimeout)
	defer cancel()
	st, err := s.opts.Projects.Status(ctx, page)
	if err != nil {
		s.logFor(r).Error("sync status", zap.Error(err))
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// Page sizes of the sync-status lists.
const (
	defaultPage = 100
	maxPage     = 1000
)

// parsePage reads ?after=<id>&limit=<n> of GET /projects/sync-status.
func parsePage(r *http.Request) (embedclient.Page, error) {
	page := embedclient.Page{Limit: defaultPage}
	q := r.URL.Query()
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPage {
			return page, badRequest("limit must be 1 to %d, got %q", maxPage, v)
		}
		page.Limit = n
	}
	if v := q.Get("after"); v != "" {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil || id < 0 {
			return page, badRequest("after must be a project id, got %q", v)
		}
		page.After = id
	}
	return page, nil
}
