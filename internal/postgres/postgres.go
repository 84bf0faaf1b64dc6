// Package postgres is the PostgreSQL Store of nself-audit. Every query runs
// in a transaction under the NOLOGIN role nself_audit_app with the caller's
// account set, so row-level security isolates accounts even when the
// connection string names a superuser.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nself-org/nself-audit/internal/audit"
)

// The roles queries run under (migrations 0001 and 0009): AppRole for the
// writer and for callers who read a whole account, ActorRole for callers
// who read only their own events.
const (
	AppRole   = "nself_audit_app"
	ActorRole = "nself_audit_actor"
)

// roleOf is the role a scope's queries run under.
func roleOf(scope audit.Scope) string {
	if scope.ActorID != "" {
		return ActorRole
	}
	return AppRole
}

// connectTimeout bounds one connection attempt unless the URL sets
// connect_timeout.
const connectTimeout = 5 * time.Second

// Store implements audit.Store on a pgx pool.
type Store struct {
	pool         *pgxpool.Pool
	pipe         *pipeline    // the fast path's connections (pipe.go)
	actors       actorSet     // actors known to be in the actors rollup
	fastCommits  atomic.Int64 // batches committed by the fast path, for tests
	splitCommits atomic.Int64 // of which their tail waited for the batch before (pipe.go)

	// readers holds one token per read running in the database (readPlanned:
	// lists, single events, chain pages). Past its capacity reads wait in
	// line, in the service, rather than share the database's cores: with 8
	// clients on 2 cores, 8 backends sharing the CPU stretched each query's
	// p99 to 9-13 ms at 1M events; 2-4 at a time, each finishing before the
	// next starts, gave 7-9 ms at the same throughput (BENCHMARKS.md).
	readers chan struct{}
}

// DefaultQueryConcurrency is the number of reads that run in the database at
// once unless SetQueryConcurrency says otherwise: twice this process's
// cores, the database being on the same machine in an nSelf stack.
func DefaultQueryConcurrency() int { return 2 * runtime.GOMAXPROCS(0) }

// SetQueryConcurrency sets how many reads run in the database at once
// (n >= 1). Call it before the store is used.
func (s *Store) SetQueryConcurrency(n int) { s.readers = make(chan struct{}, max(n, 1)) }

var _ audit.Store = (*Store)(nil)

// Open connects to the database named by url. It does not migrate; call
// Migrate before serving. Pool size follows pool_max_conns in the URL
// (default 10).
func Open(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	if cfg.MaxConns < 10 && !hasParam(url, "pool_max_conns") {
		cfg.MaxConns = 10
	}
	// A host that accepts nothing and refuses nothing (a partition, a
	// stopped machine) must fail a connection attempt rather than hold it
	// until the caller's deadline: the migrations at boot have none, and
	// would never get to retry or give up.
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "nself-audit"
	// Plan each query with its values: a generic plan cannot tell a narrow
	// time range or a rare value from a broad one, and picks badly for
	// some filters (an action prefix plus a time range sorted the whole
	// prefix). Planning costs far less than such a plan.
	if _, ok := cfg.ConnConfig.RuntimeParams["plan_cache_mode"]; !ok {
		cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	return &Store{pool: pool, pipe: newPipeline(cfg.ConnConfig.Config.Copy()), readers: make(chan struct{}, DefaultQueryConcurrency())}, nil
}

func hasParam(url, name string) bool {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return false
	}
	_, ok := cfg.RuntimeParams[name]
	return ok
}

// Close closes the pool and the write pipeline.
func (s *Store) Close() error {
	s.pipe.close()
	s.pool.Close()
	return nil
}

// Pool returns the underlying pool, for tests and maintenance verbs.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// scopeSQL switches the transaction to a role ($3, roleOf) and sets the
// account and actor that the row-level security policies read.
const scopeSQL = `SELECT set_config('role', $3, true),
       set_config('app.source_account_id', $1, true),
       set_config('app.actor_id', $2, true)`

// inScope runs fn in one transaction scoped to scope.
func (s *Store) inScope(ctx context.Context, scope audit.Scope, opts pgx.TxOptions, fn func(tx pgx.Tx) error) error {
	tx, err := s.pool.BeginTx(ctx, opts)
	if err != nil {
		return classify(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, scopeSQL, scope.AccountID, scope.ActorID, roleOf(scope)); err != nil {
		return classify(err)
	}
	if err := fn(tx); err != nil {
		return classify(err)
	}
	return classify(tx.Commit(ctx))
}

// classify turns driver errors into audit errors: anything that is not an
// answer from the server (a refused or broken connection, a timeout while
// connecting) and the server's own "going away" answers become
// EUNAVAILABLE; other server errors stay internal.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var appErr *audit.Error
	if errors.As(err, &appErr) || errors.Is(err, context.Canceled) {
		return err
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) { // whatever the server said while connecting, or its silence
		return &unavailableError{err}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code[:2] == "08", // connection exception
			pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03", // shutdown, crash, starting up
			pgErr.Code == "53300", // too many connections
			pgErr.Severity == "FATAL" || pgErr.Severity == "PANIC": // the session is gone
			return &unavailableError{err}
		}
		return err
	}
	return &unavailableError{err}
}

// unavailableError is EUNAVAILABLE for clients and keeps the cause for logs.
type unavailableError struct{ cause error }

func (e *unavailableError) Error() string { return "database unavailable: " + e.cause.Error() }
func (e *unavailableError) Unwrap() []error {
	return []error{audit.Errorf(audit.EUNAVAILABLE, "the database does not answer; retry later"), e.cause}
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return classify(s.pool.Ping(ctx))
}

// EnsurePartitions creates the monthly partitions of the current month and
// the next monthsAhead months that do not exist yet, as the connecting user
// (the table's owner). It returns how many it created.
func (s *Store) EnsurePartitions(ctx context.Context, monthsAhead int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var n int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Creating a partition locks the table: give up rather than stall
		// writes; the next hourly run tries again.
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '5s'`); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT np_nself_audit.ensure_partitions($1)`, monthsAhead).Scan(&n)
	})
	return n, classify(err)
}
