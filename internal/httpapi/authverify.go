package httpapi

import (
	"net/http"

	"github.com/nself-org/nself-audit/internal/audit"
)

// verifyAnswer is the body of GET /auth/verify.
type verifyAnswer struct {
	Kind      string `json:"kind"`
	Role      string `json:"role"`
	AccountID string `json:"account_id"`
	UserID    string `json:"user_id"`
}

// handleAuthVerify is the target of Nginx's auth_request: 200 for a valid
// plugin token or Hasura JWT, with the principal in response headers that
// Nginx can forward (auth_request_set), 401 or 403 otherwise. It checks the
// same credentials, by the same rules, as every API route.
func (s *Server) handleAuthVerify(w http.ResponseWriter, r *http.Request) {
	p, err := s.auth.Authenticate(r)
	if audit.ErrorCode(err) == audit.EINVALID {
		// auth_request knows only 2xx, 401 and 403; anything else is a 500
		// at Nginx. A malformed account header is a refusal.
		err = audit.Errorf(audit.EFORBIDDEN, "%s", audit.ErrorMessage(err))
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("X-Auth-Kind", p.Kind)
	h.Set("X-Auth-Role", p.Role)
	h.Set("X-Auth-Account-Id", p.AccountID)
	if p.UserID != "" {
		h.Set("X-Auth-User-Id", p.UserID)
	}
	writeJSON(w, http.StatusOK, verifyAnswer{Kind: p.Kind, Role: p.Role, AccountID: p.AccountID, UserID: p.UserID})
}
