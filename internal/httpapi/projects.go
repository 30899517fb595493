package httpapi

import (
	"context"
	"net/http"

	"go.uber.org/zap"

	"github.com/waywo/embed/embedclient"
	"github.com/waywo/embed/internal/queue"
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
	id, err := queue.ParseProjectID(r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, badRequest("%v", err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.RequestTimeout)
	defer cancel()
	if err := s.opts.Projects.Changed(ctx, id); err != nil {
		s.log.Warn("could not queue project sync", zap.String("request_id", requestID(r)), zap.Int64("project_id", id), zap.Error(err))
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
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.RequestTimeout)
	defer cancel()
	st, err := s.opts.Projects.Status(ctx)
	if err != nil {
		s.log.Error("sync status", zap.String("request_id", requestID(r)), zap.Error(err))
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}
