// Command nself-audit is the audit-log service of an nSelf stack and its
// command line: `nself-audit` serves, `nself-audit migrate` applies the
// database migrations, `nself-audit version` prints the version.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/internal/auth"
	"github.com/nself-org/nself-audit/internal/capture"
	"github.com/nself-org/nself-audit/internal/httpapi"
	"github.com/nself-org/nself-audit/internal/ingest"
	"github.com/nself-org/nself-audit/internal/metrics"
	"github.com/nself-org/nself-audit/internal/notify"
	"github.com/nself-org/nself-audit/internal/postgres"
	"github.com/nself-org/nself-audit/internal/sqlite"
)

// version is set at build time with -ldflags "-X main.version=1.2.3".
var version = ""

// Version returns the build's version: the ldflags value, else the module
// version Go recorded, else "dev".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

const usage = `nself-audit: the audit log of an nSelf stack.

Usage:
  nself-audit            serve the HTTP API (same as "nself-audit serve")
  nself-audit migrate    apply the database migrations and exit
  nself-audit verify --file events.ndjson
                         verify an export offline (no server, no database)
  nself-audit bench --mode single|batch|query|stats   load a running server over HTTP
  nself-audit capture add|list|remove|hasura ...
                         capture data changes without code (see "nself-audit capture help")
  nself-audit version    print the version

Client verbs, against a running service ($NSELF_AUDIT_URL, default
http://127.0.0.1:3843, with $PLUGIN_INTERNAL_SECRET; --help on each):
  nself-audit events list|get|tail   list, show or follow events
  nself-audit stats                  summarise events
  nself-audit export --output FILE   the chain as NDJSON or CSV (resumable)
  nself-audit import --file FILE     record the events of an NDJSON export
  nself-audit verify                 verify the account's chain on the server

Environment: DATABASE_URL (PostgreSQL; unset or sqlite:PATH for the embedded
store), NSELF_AUDIT_DATA_DIR (./data), PORT (3843), HOST (127.0.0.1),
PLUGIN_INTERNAL_SECRET (or PLUGIN_SECRET), HASURA_GRAPHQL_JWT_SECRET,
NSELF_AUDIT_SIGNING_KEY(_FILE), NSELF_AUDIT_CHECKPOINT_EVENTS (1000),
NSELF_AUDIT_CHECKPOINT_SECONDS (60), NSELF_AUDIT_REDACT_COLUMNS,
NSELF_AUDIT_QUERY_CONCURRENCY (2 x cores), LOG_LEVEL, LOG_FORMAT.
See README.md and docs/.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// tuneGC trades memory the service has to spare for CPU it has not: unless
// GOGC or GOMEMLIMIT is set, the heap may grow to five times the live data
// before a collection (GOGC=400; the live data is a few MiB), under a soft
// limit of 100 MiB that keeps the resident size within the 150 MB budget
// (BENCHMARKS.md). Under ingest load the default GOGC=100 spent about a
// tenth of the service's CPU collecting.
func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(100 << 20)
	}
}

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	verb := "serve"
	if len(args) > 0 {
		verb = args[0]
	}
	switch verb {
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, Version())
		return 0
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
		return 0
	case "verify":
		return verifyVerb(ctx, args[1:], getenv, stdout, stderr)
	case "events":
		return eventsVerb(ctx, args[1:], getenv, stdout, stderr)
	case "stats":
		return statsVerb(ctx, args[1:], getenv, stdout, stderr)
	case "export":
		return exportVerb(ctx, args[1:], getenv, stdout, stderr)
	case "import":
		return importVerb(ctx, args[1:], getenv, stdout, stderr)
	case "bench":
		return benchVerb(ctx, args[1:], getenv, stdout, stderr)
	case "capture":
		return captureVerb(ctx, args[1:], getenv, stdout, stderr)
	case "serve", "migrate":
		if len(args) > 1 {
			fmt.Fprintf(stderr, "nself-audit %s: takes no arguments\n", verb)
			return 2
		}
	default:
		fmt.Fprintf(stderr, "nself-audit: unknown command %q\n\n%s", verb, usage)
		return 2
	}
	cfg, err := LoadConfig(getenv)
	if err != nil {
		fmt.Fprintln(stderr, "nself-audit: "+err.Error())
		return 1
	}
	if verb == "serve" {
		if err := cfg.requireSecret(); err != nil {
			fmt.Fprintln(stderr, "nself-audit: "+err.Error())
			return 1
		}
	}
	logger := newLogger(cfg, stderr)
	slog.SetDefault(logger)
	if cfg.Embedded() {
		logger.Info("nself-audit starting", "store", "sqlite", "file", absPath(cfg.SQLitePath))
	} else {
		logger.Info("nself-audit starting", "store", "postgres")
	}
	if verb == "migrate" {
		return migrateOnly(ctx, cfg, logger, stdout)
	}
	secretFromFile, err := cfg.prepareDataDir()
	if err != nil {
		logger.Error("start failed", "err", err)
		return 1
	}
	if cfg.SigningKeyGenerated != "" && !cfg.Embedded() {
		logger.Warn("checkpoints are signed with a key kept in the data folder; set NSELF_AUDIT_SIGNING_KEY_FILE to a key you keep safe",
			"file", cfg.SigningKeyGenerated)
	}
	tuneGC(getenv)
	m := NewMain(cfg, logger)
	if err := m.Run(ctx); err != nil {
		logger.Error("start failed", "err", err)
		return 1
	}
	if secretFromFile {
		// The token is referenced, not printed: logs never hold secrets.
		host := cfg.Host
		if host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		fmt.Fprintf(stderr, "\nThe plugin token is in %s. Try:\n  curl -H \"Authorization: Bearer $(cat %s)\" http://%s/api/v1/events\n\n",
			filepath.Join(cfg.DataDir, secretFile), filepath.Join(cfg.DataDir, secretFile), net.JoinHostPort(host, portOf(m.Addr())))
	}
	<-ctx.Done()
	logger.Info("shutting down")
	if err := m.Close(); err != nil {
		logger.Error("shutdown", "err", err)
		return 1
	}
	return 0
}

func newLogger(cfg *Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// migrateOnly applies the migrations and exits. The embedded store applies
// its schema when it opens, so there it only reports.
func migrateOnly(ctx context.Context, cfg *Config, logger *slog.Logger, stdout io.Writer) int {
	var store audit.Store
	var applied []string
	if cfg.Embedded() {
		if err := os.MkdirAll(filepath.Dir(cfg.SQLitePath), 0o700); err != nil {
			logger.Error("migrate", "err", err)
			return 1
		}
		s, err := sqlite.Open(ctx, cfg.SQLitePath)
		if err != nil {
			logger.Error("migrate", "err", err)
			return 1
		}
		store = s
	} else {
		s, err := postgres.Open(ctx, cfg.DatabaseURL)
		if err != nil {
			logger.Error("migrate", "err", err)
			return 1
		}
		store = s
		if applied, err = s.Migrate(ctx); err != nil {
			s.Close()
			logger.Error("migrate", "err", err)
			return 1
		}
	}
	defer store.Close()
	st, err := store.Migrations(ctx)
	if err != nil {
		logger.Error("migrate", "err", err)
		return 1
	}
	if cfg.Embedded() {
		fmt.Fprintf(stdout, "migrations: %d of %d in the ledger (the embedded store applies them when it opens)\n", st.Applied, st.Expected)
	} else {
		fmt.Fprintf(stdout, "migrations: applied %d now, %d of %d in the ledger\n", len(applied), st.Applied, st.Expected)
	}
	return 0
}

// Main is the running service: its wiring is the same in tests, which call
// Run with port 0 and read Addr.
type Main struct {
	cfg    *Config
	logger *slog.Logger

	store   audit.Store
	pg      *postgres.Store // nil on the embedded store
	writer  *ingest.Writer
	signer  *audit.Signer
	metrics *metrics.Metrics
	api     *httpapi.Server

	server   *http.Server
	listener net.Listener
	stopBG   context.CancelFunc
	bgDone   chan struct{}

	stopCheckpoints context.CancelFunc
	checkpointsDone chan struct{}

	stopMover context.CancelFunc // table capture (PostgreSQL only)
	moverDone chan struct{}

	stopWatch context.CancelFunc // the database watch of the write routes
	watchDone chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// NewMain returns a Main for cfg.
func NewMain(cfg *Config, logger *slog.Logger) *Main {
	return &Main{cfg: cfg, logger: logger}
}

// startupTimeout bounds how long the service waits for the database at
// boot (it may still be starting) before it exits non-zero.
const startupTimeout = 60 * time.Second

// Run connects, migrates, starts the writer and the HTTP server, and
// returns once the server is listening.
func (m *Main) Run(ctx context.Context) error {
	if m.cfg.Embedded() {
		store, err := sqlite.Open(ctx, m.cfg.SQLitePath)
		if err != nil {
			return err
		}
		m.store = store
	} else if err := m.openPostgres(ctx); err != nil {
		return err
	}
	store := m.store
	if m.cfg.SigningKey == nil {
		m.Close()
		return errors.New("no checkpoint signing key")
	}
	m.signer = audit.NewSigner(m.cfg.SigningKey)
	m.metrics = metrics.New(func() int { return m.writer.QueueDepth() })
	if m.pg != nil {
		m.metrics.Register(m.pg.PoolCollector())
	}
	notifier := notify.New() // wakes the live tails after each commit
	// PostgreSQL's store pipelines batches on two connections
	// (internal/postgres/pipe.go): a third large batch in flight is linked
	// and written while the two before run, so neither backend waits for
	// it. Small batches run one after another on one connection, and two
	// in flight keep it busy.
	inFlight, smallInFlight := 1, 1
	if m.pg != nil {
		inFlight, smallInFlight = 3, 2
	}
	m.writer = ingest.New(store, ingest.Config{Logger: m.logger, InFlight: inFlight,
		SmallInFlight: smallInFlight, SmallEvents: postgres.ParallelBatchEvents, OnCommit: func(items []*audit.AppendItem, d time.Duration, err error) {
			m.metrics.ObserveCommit(items, d, err)
			notifier.Committed(items, err)
		}})
	go m.writer.Run()
	if m.cfg.CheckpointInterval > 0 { // always from the environment; tests may leave it off
		cpCtx, stopCP := context.WithCancel(context.Background())
		m.stopCheckpoints, m.checkpointsDone = stopCP, make(chan struct{})
		go m.checkpointLoop(cpCtx)
	}
	if m.pg != nil {
		m.startMover()
	}

	api := httpapi.New(httpapi.Config{
		Store:   store,
		Writer:  m.writer,
		Auth:    auth.New(m.cfg.Secret, m.cfg.JWT, nil),
		Cursors: audit.NewCursorCodec([]byte(m.cfg.Secret)),
		Signer:  m.signer,
		Metrics: m.metrics,
		Logger:  m.logger,
		Version: Version(),

		Notifier: notifier,
		Stream:   m.cfg.stream,
		Redactor: capture.NewRedactor(m.cfg.Redact),
	})
	m.api = api
	if m.pg != nil {
		// Writes are refused at once while PostgreSQL does not answer.
		wctx, stopWatch := context.WithCancel(context.Background())
		m.stopWatch, m.watchDone = stopWatch, make(chan struct{})
		go func() { defer close(m.watchDone); api.WatchDatabase(wctx) }()
	}
	ln, err := net.Listen("tcp", m.cfg.Addr())
	if err != nil {
		m.Close()
		return fmt.Errorf("listen on %s: %w", m.cfg.Addr(), err)
	}
	m.listener = ln
	m.server = httpapi.NewHTTPServer(ln.Addr().String(), api.Handler(), m.logger)
	m.server.RegisterOnShutdown(api.CloseStreams) // open streams end at once, or Shutdown would wait for them
	go func() {
		if err := m.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.logger.Error("serve", "err", err)
		}
	}()
	m.logger.Info("nself-audit listening", "addr", ln.Addr().String(), "version", Version(), "jwt", m.cfg.JWT != nil,
		"signing_key_id", m.signer.KeyID())
	return nil
}

// openPostgres connects, migrates, creates the partitions the first writes
// need, and starts partition upkeep.
func (m *Main) openPostgres(ctx context.Context) error {
	pg, err := postgres.Open(ctx, m.cfg.DatabaseURL)
	if err != nil {
		return err
	}
	if m.cfg.QueryConcurrency > 0 {
		pg.SetQueryConcurrency(m.cfg.QueryConcurrency)
	}
	m.pg, m.store = pg, pg
	if err := m.migrate(ctx); err != nil {
		pg.Close()
		return err
	}
	// The current month's partition must exist before the first write, or
	// its events would land in the default partition and block creating it.
	if _, err := pg.EnsurePartitions(ctx, partitionsAhead); err != nil {
		pg.Close()
		return fmt.Errorf("create partitions: %w", err)
	}
	bg, stop := context.WithCancel(context.Background())
	m.stopBG, m.bgDone = stop, make(chan struct{})
	go m.maintainPartitions(bg)
	return nil
}

// migrate applies migrations at boot, retrying while the database is not
// reachable yet.
func (m *Main) migrate(ctx context.Context) error {
	deadline := time.Now().Add(startupTimeout)
	for {
		applied, err := m.pg.Migrate(ctx)
		if err == nil {
			if len(applied) > 0 {
				m.logger.Info("migrations applied", "files", applied)
			}
			return nil
		}
		if audit.ErrorCode(err) != audit.EUNAVAILABLE || time.Now().After(deadline) {
			return fmt.Errorf("migrate: %w", err)
		}
		m.logger.Warn("database not reachable yet; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// partitionsAhead is how many months past the current one have partitions.
const partitionsAhead = 2

// maintainPartitions keeps monthly partitions created ahead, every hour.
func (m *Main) maintainPartitions(ctx context.Context) {
	defer close(m.bgDone)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Hour):
		}
		if n, err := m.pg.EnsurePartitions(ctx, partitionsAhead); err != nil {
			if ctx.Err() != nil {
				return
			}
			m.logger.Error("create partitions", "err", err)
		} else if n > 0 {
			m.logger.Info("partitions created", "count", n)
		}
	}
}

// checkpointTick is how often the checkpointer looks for due accounts.
const checkpointTick = time.Second

// checkpointLoop signs each account's chain head once it is
// CheckpointEvents events ahead of the last checkpoint, or has moved and
// the last checkpoint is CheckpointInterval old.
func (m *Main) checkpointLoop(ctx context.Context) {
	defer close(m.checkpointsDone)
	t := time.NewTicker(min(checkpointTick, m.cfg.CheckpointInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.checkpointDue(ctx, m.cfg.CheckpointEvents, m.cfg.CheckpointInterval)
		}
	}
}

// checkpointDue signs the heads of the accounts that are due; errors are
// logged and retried at the next tick.
func (m *Main) checkpointDue(ctx context.Context, minEvents int64, maxAge time.Duration) {
	now := time.Now()
	accounts, err := m.store.DueCheckpoints(ctx, minEvents, maxAge, now)
	if err != nil {
		if ctx.Err() == nil {
			m.logger.Warn("checkpoints: list due accounts", "err", err)
		}
		return
	}
	for _, a := range accounts {
		c, created, err := m.store.Checkpoint(ctx, audit.Scope{AccountID: a}, now, m.signer.Sign)
		switch {
		case err != nil:
			m.logger.Warn("checkpoint", "account", a, "err", err)
		case created:
			m.logger.Debug("checkpoint signed", "account", a, "seq", c.Seq, "key_id", c.KeyID)
		}
	}
}

// Addr is the address the server listens on.
func (m *Main) Addr() string { return m.listener.Addr().String() }

// shutdownTimeout bounds a graceful stop: in-flight requests finish and
// everything queued is committed within it.
const shutdownTimeout = 20 * time.Second

// commitReserve is the part of shutdownTimeout kept for committing what
// is queued after the requests in flight have had theirs.
const commitReserve = 5 * time.Second

// Close stops accepting requests, lets in-flight ones finish, commits what
// is queued, and closes the database.
func (m *Main) Close() error {
	m.closeOnce.Do(func() { m.closeErr = m.close() })
	return m.closeErr
}

func (m *Main) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	var errs []error
	if m.server != nil {
		// Requests in flight get the budget less the writer's reserve: a
		// client that never finishes its request must not keep what is
		// queued from being committed. What is still open then is cut.
		sctx, scancel := context.WithTimeout(ctx, shutdownTimeout-commitReserve)
		if err := m.server.Shutdown(sctx); err != nil {
			m.server.Close()
			errs = append(errs, fmt.Errorf("requests still in flight after %v were cut: %w", shutdownTimeout-commitReserve, err))
		}
		scancel()
	}
	m.stopMoving() // before the writer closes: its last round writes through it
	if m.writer != nil {
		errs = append(errs, m.writer.Close(ctx))
	}
	if m.stopCheckpoints != nil {
		m.stopCheckpoints()
		<-m.checkpointsDone
	}
	if m.stopWatch != nil {
		m.stopWatch()
		<-m.watchDone
	}
	if m.signer != nil && m.store != nil {
		// What was committed last is signed before the process goes.
		m.checkpointDue(ctx, 1, 0)
	}
	if m.stopBG != nil {
		m.stopBG()
		<-m.bgDone
	}
	if m.store != nil {
		errs = append(errs, m.store.Close())
	}
	return errors.Join(errs...)
}
