package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/nself-org/nself-audit/internal/audit"
)

// statusOf maps error codes to HTTP statuses, in this one place.
func statusOf(code audit.Code) int {
	switch code {
	case audit.EINVALID:
		return http.StatusBadRequest
	case audit.EUNAUTHORIZED:
		return http.StatusUnauthorized
	case audit.EFORBIDDEN:
		return http.StatusForbidden
	case audit.ENOTFOUND:
		return http.StatusNotFound
	case codeMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case audit.ECONFLICT:
		return http.StatusConflict
	case audit.ETOOLARGE:
		return http.StatusRequestEntityTooLarge
	case audit.EUNAVAILABLE:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// codeMethodNotAllowed is a code only the HTTP layer produces.
const codeMethodNotAllowed audit.Code = "method_not_allowed"

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code      audit.Code `json:"code"`
	Message   string     `json:"message"`
	RequestID string     `json:"request_id,omitempty"`
}

// Header values every JSON answer carries, set without Header.Set's
// allocation. A slice of length and capacity 1 is never written through:
// Header.Add appends to a new array.
var (
	jsonContentType = []string{"application/json; charset=utf-8"}
	noStore         = []string{"no-store"}
)

// writeJSON writes v with status. Encoding errors can only come from a gone
// client at this point, so they are not reported.
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h["Content-Type"], h["Cache-Control"] = jsonContentType, noStore
	// A type that encodes itself (an event) is written as it encodes:
	// through an Encoder its output would be parsed again to compact it.
	if m, ok := v.(json.Marshaler); ok {
		if b, err := m.MarshalJSON(); err == nil {
			w.WriteHeader(status)
			w.Write(append(b, '\n'))
			return
		}
	}
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// writeError answers with err's code and client-safe message. Internal
// errors are logged with their detail and shown as "Internal error.".
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code, msg := audit.ErrorCode(err), audit.ErrorMessage(err)
	switch {
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		return // the client left; nobody reads an answer
	case errors.Is(err, context.DeadlineExceeded):
		code, msg = audit.EUNAVAILABLE, "timed out waiting for the database; retry later"
	}
	status := statusOf(code)
	switch {
	case status >= 500 && code == audit.EINTERNAL:
		s.logger.Error("internal error", "request_id", requestID(r), "method", r.Method, "path", r.URL.Path, "err", err)
	case code == audit.EUNAVAILABLE:
		s.logger.Warn("unavailable", "request_id", requestID(r), "path", r.URL.Path, "err", err)
		w.Header().Set("Retry-After", "1")
	case code == audit.EUNAUTHORIZED:
		w.Header().Set("WWW-Authenticate", `Bearer realm="nself-audit"`)
	}
	writeJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: msg, RequestID: requestID(r)}})
}
