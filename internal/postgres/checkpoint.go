package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nself-org/nself-audit/internal/audit"
)

const checkpointColumns = `source_account_id, seq, hash, created_at, prev_signature, key_id, signature`

func scanCheckpoints(rows pgx.Rows) ([]*audit.Checkpoint, error) {
	defer rows.Close()
	var out []*audit.Checkpoint
	for rows.Next() {
		var c audit.Checkpoint
		if err := rows.Scan(&c.SourceAccountID, &c.Seq, &c.Hash, &c.CreatedAt, &c.PrevSignature, &c.KeyID, &c.Signature); err != nil {
			return nil, err
		}
		c.CreatedAt = c.CreatedAt.UTC()
		out = append(out, &c)
	}
	return out, rows.Err()
}

func wholeAccount(scope audit.Scope) error {
	if scope.ActorID != "" {
		return audit.Errorf(audit.EFORBIDDEN, "checkpoints are for a whole account")
	}
	return nil
}

// Checkpoint signs the account's head under the head's row lock.
func (s *Store) Checkpoint(ctx context.Context, scope audit.Scope, now time.Time, sign func(*audit.Checkpoint) error) (*audit.Checkpoint, bool, error) {
	if err := wholeAccount(scope); err != nil {
		return nil, false, err
	}
	var out *audit.Checkpoint
	created := false
	err := s.inScope(ctx, scope, pgx.TxOptions{}, func(tx pgx.Tx) error {
		var seq int64
		var hash string
		err := tx.QueryRow(ctx, `SELECT seq, hash FROM np_nself_audit.np_audit_chain_heads
			WHERE source_account_id = $1 FOR UPDATE`, scope.AccountID).Scan(&seq, &hash)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && seq == 0) {
			return audit.Errorf(audit.ENOTFOUND, "account %s has no events to checkpoint", scope.AccountID)
		}
		if err != nil {
			return err
		}
		latest, err := latestCheckpoint(ctx, tx, scope.AccountID)
		if err != nil {
			return err
		}
		c := &audit.Checkpoint{SourceAccountID: scope.AccountID, Seq: seq, Hash: hash, CreatedAt: now.UTC().Truncate(time.Microsecond)}
		if latest != nil {
			if latest.Seq == seq {
				out = latest
				return nil
			}
			c.PrevSignature = latest.Signature
		}
		if err := sign(c); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO np_nself_audit.np_audit_checkpoints (`+checkpointColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, c.SourceAccountID, c.Seq, c.Hash, c.CreatedAt, c.PrevSignature, c.KeyID, c.Signature); err != nil {
			return err
		}
		out, created = c, true
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return out, created, nil
}

func latestCheckpoint(ctx context.Context, tx pgx.Tx, account string) (*audit.Checkpoint, error) {
	rows, err := tx.Query(ctx, `SELECT `+checkpointColumns+` FROM np_nself_audit.np_audit_checkpoints
		WHERE source_account_id = $1 ORDER BY seq DESC LIMIT 1`, account)
	if err != nil {
		return nil, err
	}
	cs, err := scanCheckpoints(rows)
	if err != nil || len(cs) == 0 {
		return nil, err
	}
	return cs[0], nil
}

// Checkpoints returns the account's checkpoints in a seq range.
func (s *Store) Checkpoints(ctx context.Context, scope audit.Scope, fromSeq, toSeq int64, limit int) ([]*audit.Checkpoint, error) {
	if err := wholeAccount(scope); err != nil {
		return nil, err
	}
	if toSeq <= 0 {
		toSeq = 1<<63 - 1
	}
	var out []*audit.Checkpoint
	err := s.inScope(ctx, scope, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+checkpointColumns+` FROM np_nself_audit.np_audit_checkpoints
			WHERE source_account_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq LIMIT $4`, scope.AccountID, fromSeq, toSeq, limit)
		if err != nil {
			return err
		}
		out, err = scanCheckpoints(rows)
		return err
	})
	return out, err
}

// LatestCheckpoint returns the account's newest checkpoint.
func (s *Store) LatestCheckpoint(ctx context.Context, scope audit.Scope) (*audit.Checkpoint, error) {
	if err := wholeAccount(scope); err != nil {
		return nil, err
	}
	var out *audit.Checkpoint
	err := s.inScope(ctx, scope, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		out, err = latestCheckpoint(ctx, tx, scope.AccountID)
		return err
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		return nil, audit.Errorf(audit.ENOTFOUND, "no checkpoint yet")
	}
	return out, nil
}

// DueCheckpoints lists the accounts that need a checkpoint. It reads every
// account's head, which the list policy allows for this transaction only.
func (s *Store) DueCheckpoints(ctx context.Context, minEvents int64, maxAge time.Duration, now time.Time) ([]string, error) {
	var out []string
	err := s.inScope(ctx, audit.Scope{}, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('app.list_accounts', 'on', true)`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `
			SELECT h.source_account_id FROM np_nself_audit.np_audit_chain_heads h
			LEFT JOIN LATERAL (
				SELECT c.seq, c.created_at FROM np_nself_audit.np_audit_checkpoints c
				WHERE c.source_account_id = h.source_account_id ORDER BY c.seq DESC LIMIT 1
			) c ON true
			WHERE h.seq > 0 AND (c.seq IS NULL OR h.seq - c.seq >= $1 OR (h.seq > c.seq AND c.created_at <= $2))
			ORDER BY h.source_account_id`, minEvents, now.Add(-maxAge))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var a string
			if err := rows.Scan(&a); err != nil {
				return err
			}
			out = append(out, a)
		}
		return rows.Err()
	})
	return out, err
}
