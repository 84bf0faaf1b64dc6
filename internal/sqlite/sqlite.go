// Package sqlite is the SQLite Store of nself-audit: one database file, no
// server, through the pure-Go driver modernc.org/sqlite (no cgo). Through
// the audit.Store interface it behaves exactly as the PostgreSQL store does:
// the same results, order, errors, hash chain, idempotency and stats.
//
// # Durability
//
// The file is in WAL mode with synchronous=FULL: Append returns only after
// its transaction's WAL frames are fsynced, so an acknowledged event
// survives kill -9 and power loss. The file is created with mode 0600;
// SQLite gives the -wal and -shm files the same mode.
//
// # Several writers, several processes
//
// A Store has two connection pools: one writer connection and up to four
// query_only readers. Every write transaction begins with BEGIN IMMEDIATE,
// which takes SQLite's one write lock on the file at BEGIN, waiting up to
// the busy timeout (10 s) for it. That lock is a file lock, so it
// serialises writers across Stores and across processes opening the same
// file, not only within this one. Append reads each account's chain head
// inside that transaction, after the lock is held, links the new events to
// it and moves it before COMMIT: no other writer, in this process or any
// other, can read the head between, so each account's chain stays gap-free
// and unbroken however many processes append to the file. Readers use WAL
// snapshots and never wait for the writer.
//
// Do not open the database file with other code of the same process while
// a Store uses it (os.Open then Close of the file drops the process's POSIX
// locks on it, SQLite's included); Open itself never opens an existing file
// outside SQLite.
//
// # Isolation
//
// SQLite has no row-level security. Isolation is enforced here instead:
// every query carries source_account_id = ? and, for callers restricted to
// one actor, actor_id = ?; WHERE clauses are built from an allow-list of
// columns and values travel only as arguments.
//
// # Append-only
//
// Triggers named trg_audit_immutable_* abort UPDATE and DELETE of
// np_audit_events, np_audit_idempotency and np_audit_checkpoints, whoever
// connects to the file, and refuse an event that is not its account's next
// seq or reuses an id, and a checkpoint that does not follow its account's
// latest one at a stored event (which also stops INSERT OR REPLACE from
// deleting rows). The chain heads only move forward, to stored events.
//
// # Checkpoints
//
// Checkpoint runs in a BEGIN IMMEDIATE transaction like Append: it reads
// the account's chain head and latest checkpoint under the write lock, so
// checkpoints of an account chain one after another (each signing the
// previous one's signature) however many processes make them. DROP TABLE and editing the file's
// bytes cannot be prevented by SQLite; the hash chain detects both.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/nself-org/nself-audit/internal/audit"
)

// Store implements audit.Store on one SQLite file.
type Store struct {
	path   string // as given to Open
	abs    string
	info   os.FileInfo // the file opened, to notice it being removed or replaced
	w      *sql.DB     // the one writer connection; BEGIN IMMEDIATE
	r      *sql.DB     // query_only readers
	closed atomic.Bool

	insEvent *inserter // prepared on the writer
	insKey   *inserter
}

var _ audit.Store = (*Store)(nil)

// config holds what tests may change.
type config struct {
	busyTimeout time.Duration
	readers     int
}

func defaultConfig() config { return config{busyTimeout: 10 * time.Second, readers: 4} }

// Open opens (creating if needed, with mode 0600) the database file at path,
// applies the schema and returns the Store.
func Open(ctx context.Context, path string) (*Store, error) {
	return open(ctx, path, defaultConfig())
}

func open(ctx context.Context, path string, cfg config) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlite: empty database path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	if err := createFile(abs); err != nil {
		return nil, &unavailableError{err}
	}
	info, err := os.Stat(abs)
	if err != nil {
		return nil, &unavailableError{err}
	}

	s := &Store{path: path, abs: abs, info: info}
	s.w, err = sql.Open("sqlite", dsn(abs, cfg, false))
	if err != nil {
		return nil, err
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)
	s.r, err = sql.Open("sqlite", dsn(abs, cfg, true))
	if err != nil {
		s.w.Close()
		return nil, err
	}
	s.r.SetMaxOpenConns(cfg.readers)
	s.r.SetMaxIdleConns(cfg.readers)
	s.r.SetConnMaxLifetime(0)
	s.r.SetConnMaxIdleTime(0)

	// The writer connects first: its DSN turns WAL mode on, which the
	// readers' connections then find in the file.
	if err := s.migrateWhileBusy(ctx, cfg.busyTimeout); err != nil {
		s.closePools()
		return nil, err
	}
	if err := s.r.PingContext(ctx); err != nil {
		s.closePools()
		return nil, classify(ctx, err)
	}
	if s.insEvent, err = prepareInserter(ctx, s.w, insertEventHead, eventCols); err == nil {
		s.insKey, err = prepareInserter(ctx, s.w, insertKeyHead, keyCols)
	}
	if err != nil {
		s.closePools()
		return nil, classify(ctx, err)
	}
	return s, nil
}

// migrateWhileBusy applies the schema, trying again for up to wait while
// SQLite answers SQLITE_BUSY. Stores opening one new file at once
// (TestConcurrentOpen) got SQLITE_BUSY from the writer's first transaction
// at once, not after the busy timeout, in 6 of 200 runs beside two busy
// CPUs: SQLite took some lock there without its busy handler (most likely
// the exclusive one that switching the new file to WAL mode needs).
func (s *Store) migrateWhileBusy(ctx context.Context, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := s.migrate(ctx)
		var se *sqlite.Error
		if err == nil || !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_BUSY || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// createFile creates the database file, empty and with mode 0600, unless it
// exists. It never closes a descriptor of the file at path: on Linux that
// would drop every POSIX lock this process holds on it, SQLite's included,
// and another Store of the process may already be using it. So the file is
// made under a temporary name, closed, and then linked into place, which
// fails harmlessly if another process or Store got there first.
func createFile(abs string) error {
	if _, err := os.Stat(abs); err == nil {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(abs), "."+filepath.Base(abs)+".new-*") // mode 0600
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer os.Remove(name)
	if err := tmp.Close(); err != nil {
		return err
	}
	err = os.Link(name, abs)
	switch {
	case err == nil, errors.Is(err, os.ErrExist):
		return nil
	}
	// A file system without hard links: create the file in place.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return f.Close()
}

// dsn is the driver's connection string: a file: URI (so any path works)
// with mode=rw (a file removed behind the store's back is an error, not a
// new empty database) and the pragmas every pooled connection runs.
func dsn(abs string, cfg config, reader bool) string {
	u := url.URL{Scheme: "file", Path: abs}
	q := url.Values{}
	q.Set("mode", "rw")
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(cfg.busyTimeout.Milliseconds(), 10)+")")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(FULL)")
	if reader {
		q.Add("_pragma", "query_only(1)")
		q.Add("_pragma", "cache_size(-16384)") // 16 MiB per reader
	} else {
		q.Add("_pragma", "journal_mode(WAL)")
		// 64 MiB of page cache (SQLite's default is 2 MiB): a batch of 1000
		// events touches more pages than that, and a cache that overflows
		// mid-transaction spills pages to the WAL and rewrites them later.
		q.Add("_pragma", "cache_size(-65536)")
		// Checkpoint every ~40 MiB of WAL instead of every 4 MiB: the hot
		// index pages that every batch rewrites are copied into the
		// database file less often (about 10% more batch throughput).
		q.Add("_pragma", "wal_autocheckpoint(10000)")
		// A statement journal, where a statement needs one (the idempotency
		// keys' foreign key), stays in memory instead of a temporary file.
		q.Add("_pragma", "temp_store(MEMORY)")
		q.Set("_txlock", "immediate")
	}
	return u.String() + "?" + q.Encode()
}

// Path returns the path the store was opened with.
func (s *Store) Path() string { return s.path }

// Close closes both pools. The last connection to the file checkpoints the
// WAL into it.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.insEvent.Close()
	s.insKey.Close()
	return s.closePools()
}

func (s *Store) closePools() error {
	return errors.Join(s.r.Close(), s.w.Close())
}

// check returns EUNAVAILABLE when the store is closed or its file is gone
// or was replaced: SQLite would go on using the removed file, and an event
// acknowledged into it would be lost.
func (s *Store) check() error {
	if s.closed.Load() {
		return &unavailableError{errors.New("store is closed")}
	}
	info, err := os.Stat(s.abs)
	if err != nil {
		return &unavailableError{err}
	}
	if !os.SameFile(info, s.info) {
		return &unavailableError{fmt.Errorf("database file %s was replaced while open", s.path)}
	}
	return nil
}

// classify turns driver errors into audit errors. A context that ended
// passes through as its error. A database that cannot be used now — locked
// or busy past the busy timeout, missing, unreadable or unwritable, out of
// space or failing I/O, closed — is EUNAVAILABLE; anything else is internal.
func classify(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	var appErr *audit.Error
	if errors.As(err, &appErr) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if ctx != nil && ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	if errors.Is(err, sql.ErrConnDone) || err.Error() == "sql: database is closed" {
		return &unavailableError{err}
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY,
			sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_PERM, sqlite3.SQLITE_PROTOCOL,
			sqlite3.SQLITE_NOLFS, sqlite3.SQLITE_AUTH:
			return &unavailableError{err}
		}
		return err
	}
	var pathErr *os.PathError
	if errors.As(err, &pathErr) {
		return &unavailableError{err}
	}
	return err
}

// unavailableError is EUNAVAILABLE for clients and keeps the cause for logs.
type unavailableError struct{ cause error }

func (e *unavailableError) Error() string { return "database unavailable: " + e.cause.Error() }
func (e *unavailableError) Unwrap() []error {
	return []error{audit.Errorf(audit.EUNAVAILABLE, "the database does not answer; retry later"), e.cause}
}
