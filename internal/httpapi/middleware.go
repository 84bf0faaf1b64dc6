package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"time"

	"github.com/google/uuid"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/internal/auth"
)

type ctxKey int

const requestIDKey ctxKey = iota

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// requestID returns the request's id, set by withRequestID.
func requestID(r *http.Request) string {
	id, _ := r.Context().Value(requestIDKey).(string)
	return id
}

// withRequestID takes X-Request-Id from the caller (Nginx sets one) when it
// is well-formed, else makes one, and echoes it in the response.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !requestIDPattern.MatchString(id) {
			id = uuid.NewString()
		}
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey, id)))
	})
}

// statusRecorder remembers the status for the access log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flush, deadlines).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// withLogAndRecover logs each request (method, path, status, duration; never
// the query string or headers, which may carry tokens) and turns a panic
// into a 500 JSON error instead of a dropped connection.
func (s *Server) withLogAndRecover(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.logger.Error("panic", "request_id", requestID(r), "path", r.URL.Path, "panic", fmt.Sprint(v))
				if rec.status == 0 {
					s.writeError(rec, r, fmt.Errorf("panic: %v", v))
				}
			}
			elapsed := time.Since(start)
			if s.logger.Enabled(r.Context(), slog.LevelDebug) { // the arguments cost even when not logged
				s.logger.Debug("request", "method", r.Method, "path", r.URL.Path, "status", rec.status,
					"duration_ms", elapsed.Milliseconds(), "request_id", requestID(r))
			}
			if s.metrics != nil {
				// r.Pattern is set by the mux on this very request. The
				// batch route's path is an event's too to the mux (GET
				// /api/v1/events/{id}); it counts under the batch route.
				route := r.Pattern
				if r.URL.Path == batchPath {
					route = batchRoute
				}
				s.metrics.ObserveRequest(route, r.Method, rec.status, elapsed)
			}
		}()
		next.ServeHTTP(rec, r)
	})
}

// authenticated lets a request through only with valid credentials, and
// puts the principal in its context.
func (s *Server) authenticated(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.auth.Authenticate(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(auth.NewContext(r.Context(), p)))
	})
}

// principal returns the authenticated caller. Routes behind authenticated
// always have one.
func principal(r *http.Request) *auth.Principal {
	p, ok := auth.FromContext(r.Context())
	if !ok {
		panic("httpapi: route registered without authentication")
	}
	return p
}

// scopeOf is what the caller may read: its account, and only its own events
// unless its role reads all of them.
func scopeOf(p *auth.Principal) audit.Scope {
	s := audit.Scope{AccountID: p.AccountID}
	if !p.ReadAll {
		s.ActorID = p.UserID
	}
	return s
}

// limitBody caps a request body; reading past the cap is an ETOOLARGE error.
func limitBody(w http.ResponseWriter, r *http.Request, n int64) {
	r.Body = &maxBody{http.MaxBytesReader(w, r.Body, n), n}
}

type maxBody struct {
	rc interface {
		Read([]byte) (int, error)
		Close() error
	}
	limit int64
}

func (m *maxBody) Read(p []byte) (int, error) {
	n, err := m.rc.Read(p)
	if _, ok := err.(*http.MaxBytesError); ok {
		return n, audit.Errorf(audit.ETOOLARGE, "body: larger than %d KiB", m.limit>>10)
	}
	return n, err
}

func (m *maxBody) Close() error { return m.rc.Close() }
