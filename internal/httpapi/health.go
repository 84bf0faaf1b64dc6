package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/nself-org/nself-audit/internal/audit"
)

type healthBody struct {
	Status     string                `json:"status"`
	Version    string                `json:"version"`
	Migrations audit.MigrationStatus `json:"migrations"`
	Reason     string                `json:"reason,omitempty"`
}

// probeTimeout bounds the database check of the probes: an orchestrator
// wants a fast answer, and a database slower than this is not healthy.
const probeTimeout = 2 * time.Second

func (s *Server) probe(r *http.Request) (healthBody, error) {
	ctx, cancel := context.WithTimeout(r.Context(), probeTimeout)
	defer cancel()
	st, err := s.store.Migrations(ctx)
	return healthBody{Version: s.version, Migrations: st}, err
}

// handleHealth is liveness plus the migration counts nSelf's installer polls
// (E118/E119): 200 when the database answers, 503 "degraded" when not. The
// migrations field is always present.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	body, err := s.probe(r)
	if err != nil {
		body.Status, body.Reason = "degraded", "database unavailable"
		s.logger.Warn("health: database unavailable", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	body.Status = "ok"
	writeJSON(w, http.StatusOK, body)
}

// handleReady is readiness: 200 only when the database answers and every
// migration is applied.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	body, err := s.probe(r)
	switch {
	case err != nil:
		body.Status, body.Reason = "not_ready", "database unavailable"
	case body.Migrations.Applied < body.Migrations.Expected:
		body.Status, body.Reason = "not_ready", "migrations pending"
	default:
		body.Status = "ready"
		writeJSON(w, http.StatusOK, body)
		return
	}
	w.Header().Set("Retry-After", "1")
	writeJSON(w, http.StatusServiceUnavailable, body)
}
