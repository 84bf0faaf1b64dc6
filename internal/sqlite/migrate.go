package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/migrations"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migration is one embedded migration file.
type Migration = migrations.Migration

// Migrations returns the embedded migrations in the order they apply: byte
// order of their file names, *.down.sql excluded, as for PostgreSQL.
func Migrations() ([]Migration, error) {
	sub, err := fs.Sub(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	return migrations.Load(sub)
}

const ledgerSQL = `CREATE TABLE IF NOT EXISTS schema_migrations (
	filename   TEXT PRIMARY KEY,
	checksum   TEXT NOT NULL,
	applied_at TEXT NOT NULL
)`

// migrate applies the migrations that are not in the ledger yet, all in one
// write transaction with their ledger rows. BEGIN IMMEDIATE makes processes
// opening the file together apply each file once. A file whose checksum
// differs from the ledger's is an error: applied migrations never change.
func (s *Store) migrate(ctx context.Context) error {
	all, err := Migrations()
	if err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return classify(ctx, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, ledgerSQL); err != nil {
		return classify(ctx, fmt.Errorf("create migration ledger: %w", err))
	}
	applied, err := ledger(ctx, tx)
	if err != nil {
		return err
	}
	for _, m := range all {
		if sum, ok := applied[m.Filename]; ok {
			if sum != m.Checksum {
				return fmt.Errorf("sqlite migration %s changed after it was applied (ledger checksum %s, file %s)", m.Filename, sum, m.Checksum)
			}
			continue
		}
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			return classify(ctx, fmt.Errorf("sqlite migration %s: %w", m.Filename, err))
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (filename, checksum, applied_at) VALUES (?, ?, ?)`,
			m.Filename, m.Checksum, audit.FormatTime(time.Now())); err != nil {
			return classify(ctx, fmt.Errorf("sqlite migration %s: record in ledger: %w", m.Filename, err))
		}
	}
	return classify(ctx, tx.Commit())
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// ledger returns filename → checksum of the applied migrations; empty when
// the ledger does not exist.
func ledger(ctx context.Context, q querier) (map[string]string, error) {
	out := map[string]string{}
	rows, err := q.QueryContext(ctx, `SELECT filename, checksum FROM schema_migrations`)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return out, nil
		}
		return nil, classify(ctx, err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, sum string
		if err := rows.Scan(&name, &sum); err != nil {
			return nil, classify(ctx, err)
		}
		out[name] = sum
	}
	return out, classify(ctx, rows.Err())
}

// Migrations reports how many of the embedded migrations the ledger holds
// with their current checksum. It is EUNAVAILABLE when the database cannot
// be read.
func (s *Store) Migrations(ctx context.Context) (audit.MigrationStatus, error) {
	all, err := Migrations()
	if err != nil {
		return audit.MigrationStatus{}, err
	}
	st := audit.MigrationStatus{Expected: len(all)}
	if err := s.check(); err != nil {
		return st, err
	}
	applied, err := ledger(ctx, s.r)
	if err != nil {
		return st, err
	}
	st.Applied = migrations.Applied(all, applied)
	return st, nil
}
