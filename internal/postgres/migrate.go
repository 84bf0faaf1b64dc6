package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/migrations"
)

// Migration is one embedded migration file.
type Migration = migrations.Migration

// Migrations returns the embedded migrations in the order they apply: byte
// order of their file names, *.down.sql excluded (nSelf's contract).
func Migrations() ([]Migration, error) { return migrations.Load(migrations.FS) }

const (
	ledgerTable = "np_nself_audit.schema_migrations"
	lockSQL     = `SELECT pg_advisory_lock(hashtext('np_nself_audit.schema_migrations'))`
	unlockSQL   = `SELECT pg_advisory_unlock(hashtext('np_nself_audit.schema_migrations'))`
)

// Migrate applies the migrations that are not in the ledger yet, one
// transaction per file with its ledger row, under an advisory lock so that
// replicas starting together apply each file once. A file whose checksum
// differs from the ledger's is an error: applied migrations never change.
// It returns the names of the files it applied.
func (s *Store) Migrate(ctx context.Context) ([]string, error) {
	all, err := Migrations()
	if err != nil {
		return nil, err
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, classify(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, lockSQL); err != nil {
		return nil, classify(err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), unlockSQL)

	if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS np_nself_audit;
		CREATE TABLE IF NOT EXISTS `+ledgerTable+` (
			filename   text PRIMARY KEY,
			checksum   text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
		return nil, fmt.Errorf("create migration ledger: %w", err)
	}
	applied, err := ledger(ctx, conn.Conn())
	if err != nil {
		return nil, err
	}
	var done []string
	for _, m := range all {
		if sum, ok := applied[m.Filename]; ok {
			if sum != m.Checksum {
				return done, fmt.Errorf("migration %s changed after it was applied (ledger checksum %s, file %s)", m.Filename, sum, m.Checksum)
			}
			continue
		}
		if err := apply(ctx, conn.Conn(), m); err != nil {
			return done, err
		}
		done = append(done, m.Filename)
	}
	return done, nil
}

func apply(ctx context.Context, conn *pgx.Conn, m Migration) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return classify(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '5s'; SET LOCAL statement_timeout = '60s'`); err != nil {
		return classify(err)
	}
	// No arguments: pgx sends the file with the simple protocol, which runs
	// several statements.
	if _, err := tx.Exec(ctx, m.SQL); err != nil {
		return fmt.Errorf("migration %s: %w", m.Filename, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO `+ledgerTable+` (filename, checksum) VALUES ($1, $2)`, m.Filename, m.Checksum); err != nil {
		return fmt.Errorf("migration %s: record in ledger: %w", m.Filename, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migration %s: commit: %w", m.Filename, err)
	}
	return nil
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// ledger returns filename → checksum of the applied migrations; empty when
// the ledger does not exist yet.
func ledger(ctx context.Context, q querier) (map[string]string, error) {
	out := map[string]string{}
	rows, err := q.Query(ctx, `SELECT filename, checksum FROM `+ledgerTable)
	if err == nil {
		for rows.Next() {
			var name, sum string
			if err := rows.Scan(&name, &sum); err != nil {
				rows.Close()
				return nil, err
			}
			out[name] = sum
		}
		err = rows.Err()
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") { // no table / no schema yet
		return map[string]string{}, nil
	}
	return out, classify(err)
}

// Migrations reports how many of the embedded migrations the ledger holds.
func (s *Store) Migrations(ctx context.Context) (audit.MigrationStatus, error) {
	all, err := Migrations()
	if err != nil {
		return audit.MigrationStatus{}, err
	}
	st := audit.MigrationStatus{Expected: len(all)}
	applied, err := ledger(ctx, s.pool)
	if err != nil {
		return st, err
	}
	st.Applied = migrations.Applied(all, applied)
	return st, nil
}
