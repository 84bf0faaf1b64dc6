package httpapi

import (
	"encoding/base64"
	"net/http"
	"strconv"

	"github.com/nself-org/nself-audit/internal/audit"
)

// maxCheckpoints bounds one answer of GET /api/v1/checkpoints; page with
// from_seq.
const maxCheckpoints = 1000

// handleCreateCheckpoint signs the account's chain head now: 201 with the
// new checkpoint, 200 with the latest one when no event came since. Like
// every write, it is for the plugin token only.
func (s *Server) handleCreateCheckpoint(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	if !p.CanWrite {
		s.writeError(w, r, audit.Errorf(audit.EFORBIDDEN, "only the plugin token may create checkpoints; a Hasura JWT reads"))
		return
	}
	if len(r.URL.Query()) > 0 {
		s.writeError(w, r, audit.Errorf(audit.EINVALID, "this route takes no query parameters"))
		return
	}
	c, created, err := s.store.Checkpoint(r.Context(), audit.Scope{AccountID: p.AccountID}, s.now(), s.signer.Sign)
	if audit.ErrorCode(err) == audit.ENOTFOUND {
		err = audit.Errorf(audit.ECONFLICT, "account %s has no events to checkpoint yet", p.AccountID)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, c)
}

type checkpointList struct {
	Checkpoints []*audit.Checkpoint `json:"checkpoints"`
}

// handleListCheckpoints lists the account's checkpoints in seq order,
// optionally within from_seq..to_seq, at most limit (default and maximum
// 1000).
func (s *Server) handleListCheckpoints(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	if err := requireWholeAccount(p); err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	from, to, err := seqParams(q, "limit")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	limit := maxCheckpoints
	if q.Has("limit") {
		if limit, err = strconv.Atoi(q.Get("limit")); err != nil || limit < 1 || limit > maxCheckpoints {
			s.writeError(w, r, audit.Errorf(audit.EINVALID, "limit: must be an integer from 1 to %d", maxCheckpoints))
			return
		}
	}
	cs, err := s.store.Checkpoints(r.Context(), audit.Scope{AccountID: p.AccountID}, from, to, limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if cs == nil {
		cs = []*audit.Checkpoint{}
	}
	writeJSON(w, http.StatusOK, checkpointList{Checkpoints: cs})
}

func (s *Server) handleLatestCheckpoint(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	if err := requireWholeAccount(p); err != nil {
		s.writeError(w, r, err)
		return
	}
	if len(r.URL.Query()) > 0 {
		s.writeError(w, r, audit.Errorf(audit.EINVALID, "this route takes no query parameters"))
		return
	}
	c, err := s.store.LatestCheckpoint(r.Context(), audit.Scope{AccountID: p.AccountID})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

type publicKey struct {
	Algorithm string `json:"algorithm"`
	KeyID     string `json:"key_id"`
	PublicKey string `json:"public_key"`
}

// handlePublicKey answers the key that verifies new checkpoints. An
// auditor pins it (or fetches it out of band) before trusting checkpoints.
func (s *Server) handlePublicKey(w http.ResponseWriter, r *http.Request) {
	if len(r.URL.Query()) > 0 {
		s.writeError(w, r, audit.Errorf(audit.EINVALID, "this route takes no query parameters"))
		return
	}
	writeJSON(w, http.StatusOK, publicKey{
		Algorithm: "ed25519",
		KeyID:     s.signer.KeyID(),
		PublicKey: base64.StdEncoding.EncodeToString(s.signer.PublicKey()),
	})
}
