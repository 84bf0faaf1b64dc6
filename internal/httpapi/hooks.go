package httpapi

import (
	"net/http"
	"strings"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/internal/capture"
)

// handleHasuraHook records one Hasura event-trigger delivery as an event,
// through the same writer as POST /api/v1/events. Hasura's event id is the
// idempotency key: a retried delivery answers 200 with the event stored
// first. The account is the session's x-hasura-source-account-id, else
// the row's source_account_id, else the caller's (the account header, else
// primary); an account header that names another account than the event is
// refused rather than obeyed or ignored.
func (s *Server) handleHasuraHook(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	if !p.CanWrite {
		s.writeError(w, r, audit.Errorf(audit.EFORBIDDEN, "only the plugin token may deliver Hasura events"))
		return
	}
	keys, err := hookKeyColumns(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	limitBody(w, r, MaxBatchBodyBytes)
	ev, err := capture.DecodeHasura(r.Body, keys)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	account := ev.Change.Account
	switch {
	case account == "":
		account = p.AccountID
	case account != p.AccountID && accountHeaderSent(r):
		s.writeError(w, r, audit.Errorf(audit.EINVALID, "the event belongs to account %q, but the request's account header names %q", truncateText(account, 128), p.AccountID))
		return
	}
	in, err := ev.Change.Input(s.redactor)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	e, err := in.Validate(account, "", s.now())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	item := &audit.AppendItem{Event: e, IdempotencyKey: ev.IdempotencyKey, Fingerprint: ev.Fingerprint}
	s.writeItem(w, r, item, "Hasura event "+truncateText(ev.ID, 64)+" was already recorded with other content")
}

// hookKeyColumns reads the only query parameter of the hook route, key:
// the comma-separated key columns of the table (default id).
func hookKeyColumns(r *http.Request) ([]string, error) {
	q := r.URL.Query()
	for name := range q {
		if name != "key" {
			return nil, audit.Errorf(audit.EINVALID, "%s: unknown query parameter (this route takes only key)", truncateText(name, 64))
		}
	}
	vs := q["key"]
	switch {
	case len(vs) == 0:
		return nil, nil
	case len(vs) > 1:
		return nil, audit.Errorf(audit.EINVALID, "key: given more than once")
	}
	var keys []string
	for _, k := range strings.Split(vs[0], ",") {
		if err := audit.CheckText("key", k, 63); err != nil {
			return nil, err
		}
		if k == "" {
			return nil, audit.Errorf(audit.EINVALID, "key: want column names separated by commas, such as key=id or key=tenant,number")
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// accountHeaderSent reports whether the request named its account itself.
func accountHeaderSent(r *http.Request) bool {
	return len(r.Header.Values("X-Source-Account-Id")) > 0 || len(r.Header.Values("X-Hasura-Source-Account-Id")) > 0
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
