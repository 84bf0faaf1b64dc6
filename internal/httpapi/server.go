// Package httpapi is the HTTP interface of nself-audit: routes on the
// standard library's ServeMux, handlers that decode, validate, store and
// respond, JSON errors, and the middleware chain.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"path"
	"time"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/internal/auth"
	"github.com/nself-org/nself-audit/internal/capture"
	"github.com/nself-org/nself-audit/internal/metrics"
	"github.com/nself-org/nself-audit/internal/notify"
)

// Writer is the write path (ingest.Writer).
type Writer interface {
	WriteUntil(ctx context.Context, stop <-chan struct{}, timeout time.Duration, items ...*audit.AppendItem) error
}

// Server holds what the handlers need.
type Server struct {
	store   audit.Store
	writer  Writer
	auth    *auth.Authenticator
	cursors *audit.CursorCodec
	signer  *audit.Signer
	metrics *metrics.Metrics
	logger  *slog.Logger
	version string
	now     func() time.Time

	notifier     *notify.Notifier
	stream       StreamConfig
	streams      chan struct{} // one token per open stream
	streamsCtx   context.Context
	closeStreams context.CancelFunc
	redactor     *capture.Redactor // secret-looking columns of captured changes
	db           dbState           // set by WatchDatabase
}

// Config is what New needs. Every field is required but Logger and Now.
type Config struct {
	Store   audit.Store
	Writer  Writer
	Auth    *auth.Authenticator
	Cursors *audit.CursorCodec
	Signer  *audit.Signer
	Metrics *metrics.Metrics // nil: no /metrics
	Logger  *slog.Logger
	Version string
	Now     func() time.Time

	// Notifier wakes live tails after this process's commits; nil: they
	// rely on their poll alone.
	Notifier *notify.Notifier
	Stream   StreamConfig
	// Redactor picks the columns of captured changes that are redacted;
	// nil: the default patterns only.
	Redactor *capture.Redactor
}

// New returns a Server.
func New(cfg Config) *Server {
	s := &Server{store: cfg.Store, writer: cfg.Writer, auth: cfg.Auth, cursors: cfg.Cursors, signer: cfg.Signer,
		metrics: cfg.Metrics, logger: cfg.Logger, version: cfg.Version, now: cfg.Now}
	if s.logger == nil {
		s.logger = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.notifier, s.stream = cfg.Notifier, cfg.Stream
	if s.stream.Heartbeat <= 0 {
		s.stream.Heartbeat = DefaultStreamHeartbeat
	}
	if s.stream.Poll <= 0 {
		s.stream.Poll = DefaultStreamPoll
	}
	if s.stream.Max <= 0 {
		s.stream.Max = DefaultMaxStreams
	}
	if s.stream.Page <= 0 {
		s.stream.Page = defaultStreamPage
	}
	if s.stream.Span <= 0 {
		s.stream.Span = defaultStreamSpan
	}
	s.streams = make(chan struct{}, s.stream.Max)
	s.streamsCtx, s.closeStreams = context.WithCancel(context.Background())
	if s.redactor = cfg.Redactor; s.redactor == nil {
		s.redactor = capture.NewRedactor(nil)
	}
	return s
}

// Limits of the request side.
const (
	MaxBodyBytes = 1 << 20
	writeTimeout = 30 * time.Second // waiting for a commit
	readTimeout  = 30 * time.Second // one query of a read route
)

// Handler returns the service's routes with their middleware.
func (s *Server) Handler() http.Handler {
	return withRequestID(s.withLogAndRecover(s.notFound(s.routes().ServeMux)))
}

// Routes returns the patterns Handler registers ("GET /health", ...), in
// order: the list that the OpenAPI document is checked against.
func (s *Server) Routes() []string { return s.routes().patterns }

// routes registers the service's routes with their middleware: the one
// place where both are listed.
func (s *Server) routes() *routeMux {
	mux := &routeMux{ServeMux: http.NewServeMux()}
	mux.HandleFunc("GET /health", s.handleHealth)
	mux.HandleFunc("GET /ready", s.handleReady)
	mux.HandleFunc("GET /openapi.json", s.handleOpenAPI)
	mux.HandleFunc("GET /auth/verify", s.handleAuthVerify)
	mux.HandleFunc("GET /{$}", s.handleViewerPage) // the audit viewer (viewer.go)
	mux.HandleFunc("GET /ui/{file}", s.handleViewerAsset)

	api := func(h http.HandlerFunc) http.Handler { return s.authenticated(h) }
	mux.Handle("POST /api/v1/events", api(s.handleCreateEvent))
	mux.Handle(batchRoute, api(s.handleCreateBatch))
	mux.Handle("GET /api/v1/events", api(s.handleListEvents))
	mux.Handle("GET /api/v1/events/{id}", api(s.handleGetEvent))
	mux.Handle("GET /api/v1/actors/{actor_id}/events", api(s.handleActorEvents))
	mux.Handle("GET /api/v1/stats", api(s.handleStats))
	mux.Handle("GET /api/v1/verify", api(s.handleVerify))
	mux.Handle("GET /api/v1/events/export", api(s.handleExport))
	mux.Handle("GET /api/v1/events/stream", api(s.handleStream))
	mux.Handle("POST /api/v1/checkpoints", api(s.handleCreateCheckpoint))
	mux.Handle("GET /api/v1/checkpoints", api(s.handleListCheckpoints))
	mux.Handle("GET /api/v1/checkpoints/latest", api(s.handleLatestCheckpoint))
	mux.Handle("GET /api/v1/public-key", api(s.handlePublicKey))
	mux.Handle("POST /api/v1/hooks/hasura", api(s.handleHasuraHook))
	if s.metrics != nil {
		// Behind the plugin token like the API: a scrape config sends it
		// as its bearer token.
		// Metrics name every account: the plugin token only, never a JWT.
		metricsHandler := s.metrics.Handler()
		mux.Handle("GET /metrics", s.authenticated(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if principal(r).Kind != "plugin" {
				s.writeError(w, r, audit.Errorf(audit.EFORBIDDEN, "metrics cover every account: only the plugin token may read them"))
				return
			}
			metricsHandler.ServeHTTP(w, r)
		})))
	}
	return mux
}

// batchPath is the batch route's path. To the mux it is also an event's
// path, GET /api/v1/events/{id}: a GET of it reaches handleGetEvent, which
// answers 405 as the mux does for the other methods, with Allow: POST.
const batchPath = "/api/v1/events/batch"

// batchRoute is the batch route's pattern, and its metrics label.
const batchRoute = "POST " + batchPath

// routeMux is a ServeMux that remembers the patterns registered on it.
type routeMux struct {
	*http.ServeMux
	patterns []string
}

func (m *routeMux) Handle(pattern string, h http.Handler) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.Handle(pattern, h)
}

func (m *routeMux) HandleFunc(pattern string, h http.HandlerFunc) { m.Handle(pattern, h) }

// notFound answers unknown routes and wrong methods with JSON errors, after
// authentication everywhere but the open routes (the probes, the OpenAPI
// document, the viewer's files): without credentials, a caller learns
// nothing about which routes exist.
func (s *Server) notFound(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		// The mux answers an unclean path (//, ..) with a redirect, before
		// any authentication; we answer it as an unknown route instead.
		if pattern != "" && path.Clean(r.URL.Path) == r.URL.Path {
			mux.ServeHTTP(w, r) // the mux sets the path values
			return
		}
		answer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Run the mux's own answer to learn its status and Allow header,
			// then replace its plain-text body with a JSON error.
			probe := &headerProbe{header: http.Header{}}
			h.ServeHTTP(probe, r)
			allow := probe.header.Get("Allow")
			if allow != "" && r.URL.Path == batchPath {
				allow = http.MethodPost // the mux counts GET /api/v1/events/{id} too
			}
			if probe.status == http.StatusMethodNotAllowed && pattern == "" {
				s.methodNotAllowed(w, r, allow)
				return
			}
			if allow != "" {
				w.Header().Set("Allow", allow)
			}
			s.writeError(w, r, audit.Errorf(audit.ENOTFOUND, "no route %s %s", r.Method, r.URL.Path))
		})
		if r.URL.Path == "/health" || r.URL.Path == "/ready" || r.URL.Path == "/openapi.json" || isViewerPath(r.URL.Path) {
			answer.ServeHTTP(w, r)
			return
		}
		s.authenticated(answer).ServeHTTP(w, r)
	})
}

// methodNotAllowed answers 405 for r's method on its path; allow lists the
// methods the path takes.
func (s *Server) methodNotAllowed(w http.ResponseWriter, r *http.Request, allow string) {
	if allow != "" {
		w.Header().Set("Allow", allow)
	}
	s.writeError(w, r, audit.Errorf(codeMethodNotAllowed, "method %s is not allowed on %s", r.Method, r.URL.Path))
}

// headerProbe is a ResponseWriter that keeps headers and status and drops
// the body.
type headerProbe struct {
	header http.Header
	status int
}

func (p *headerProbe) Header() http.Header         { return p.header }
func (p *headerProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *headerProbe) WriteHeader(code int)        { p.status = code }

// NewHTTPServer returns an http.Server with the timeouts this service wants:
// a slow client cannot hold a connection open by dribbling headers.
func NewHTTPServer(addr string, h http.Handler, logger *slog.Logger) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      writeTimeout + 15*time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}
