package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/nself-org/nself-audit/internal/audit"
)

const checkpointColumns = `source_account_id, seq, hash, created_at, prev_signature, key_id, signature`

func queryCheckpoints(ctx context.Context, q querier, query string, args ...any) ([]*audit.Checkpoint, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*audit.Checkpoint
	for rows.Next() {
		var c audit.Checkpoint
		var created int64
		if err := rows.Scan(&c.SourceAccountID, &c.Seq, &c.Hash, &created, &c.PrevSignature, &c.KeyID, &c.Signature); err != nil {
			return nil, err
		}
		c.CreatedAt = time.UnixMicro(created).UTC()
		out = append(out, &c)
	}
	return out, rows.Err()
}

// latestCheckpoint returns the account's newest checkpoint, nil if none.
func latestCheckpoint(ctx context.Context, q querier, account string) (*audit.Checkpoint, error) {
	cs, err := queryCheckpoints(ctx, q, `SELECT `+checkpointColumns+` FROM np_audit_checkpoints
		WHERE source_account_id = ? ORDER BY seq DESC LIMIT 1`, account)
	if err != nil || len(cs) == 0 {
		return nil, err
	}
	return cs[0], nil
}

// Checkpoint signs the account's chain head in one BEGIN IMMEDIATE
// transaction: it holds the file's write lock from its start, as Append
// does, so no writer of any process moves the head or adds a checkpoint
// between the head and the latest checkpoint being read and the new one
// being stored.
func (s *Store) Checkpoint(ctx context.Context, scope audit.Scope, now time.Time, sign func(*audit.Checkpoint) error) (*audit.Checkpoint, bool, error) {
	if scope.ActorID != "" {
		return nil, false, audit.Errorf(audit.EFORBIDDEN, "checkpoints are made only for a whole account")
	}
	if err := s.check(); err != nil {
		return nil, false, err
	}
	account := scope.AccountID
	tx, err := s.w.BeginTx(ctx, nil) // BEGIN IMMEDIATE (_txlock=immediate)
	if err != nil {
		return nil, false, classify(ctx, err)
	}
	defer tx.Rollback()

	var seq int64
	var hash string
	err = tx.QueryRowContext(ctx, `SELECT seq, hash FROM np_audit_chain_heads WHERE source_account_id = ?`, account).
		Scan(&seq, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, audit.Errorf(audit.ENOTFOUND, "account %s has no events to checkpoint", account)
	}
	if err != nil {
		return nil, false, classify(ctx, err)
	}
	latest, err := latestCheckpoint(ctx, tx, account)
	if err != nil {
		return nil, false, classify(ctx, err)
	}
	if latest != nil && latest.Seq == seq {
		return latest, false, nil
	}
	c := &audit.Checkpoint{
		SourceAccountID: account,
		Seq:             seq,
		Hash:            hash,
		CreatedAt:       now.UTC().Truncate(time.Microsecond),
	}
	if latest != nil {
		c.PrevSignature = latest.Signature
	}
	if err := sign(c); err != nil {
		return nil, false, err
	}
	// What is stored is what is read back: UTC microseconds. A signer that
	// kept a finer time signed its TimeFormat form, which is the same.
	c.CreatedAt = c.CreatedAt.UTC().Truncate(time.Microsecond)
	if _, err := tx.ExecContext(ctx, `INSERT INTO np_audit_checkpoints (`+checkpointColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, c.SourceAccountID, c.Seq, c.Hash, c.CreatedAt.UnixMicro(),
		c.PrevSignature, c.KeyID, c.Signature); err != nil {
		return nil, false, classify(ctx, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, false, classify(ctx, err)
	}
	return c, true, nil
}

// Checkpoints returns a page of the account's checkpoints in seq order.
func (s *Store) Checkpoints(ctx context.Context, scope audit.Scope, fromSeq, toSeq int64, limit int) ([]*audit.Checkpoint, error) {
	if scope.ActorID != "" {
		return nil, audit.Errorf(audit.EFORBIDDEN, "checkpoints are for a whole account")
	}
	if limit < 0 { // PostgreSQL: LIMIT must not be negative; SQLite would read it as no limit
		return nil, fmt.Errorf("checkpoints: negative limit %d", limit)
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	w := &where{}
	w.add("source_account_id = ?", scope.AccountID)
	if fromSeq != 0 {
		w.add("seq >= ?", fromSeq)
	}
	if toSeq != 0 {
		w.add("seq <= ?", toSeq)
	}
	cs, err := queryCheckpoints(ctx, s.r, `SELECT `+checkpointColumns+` FROM np_audit_checkpoints
		WHERE `+w.String()+` ORDER BY seq LIMIT ?`, append(w.args, limit)...)
	return cs, classify(ctx, err)
}

// LatestCheckpoint returns the account's newest checkpoint.
func (s *Store) LatestCheckpoint(ctx context.Context, scope audit.Scope) (*audit.Checkpoint, error) {
	if scope.ActorID != "" {
		return nil, audit.Errorf(audit.EFORBIDDEN, "checkpoints are for a whole account")
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	c, err := latestCheckpoint(ctx, s.r, scope.AccountID)
	if err != nil {
		return nil, classify(ctx, err)
	}
	if c == nil {
		return nil, audit.Errorf(audit.ENOTFOUND, "no checkpoint yet")
	}
	return c, nil
}

// DueCheckpoints lists the accounts to checkpoint, in bytewise order, in
// one query: those with a chain head and no checkpoint, those whose head is
// at least minEvents past the latest checkpoint, and those whose head is
// past a latest checkpoint made at or before now - maxAge.
func (s *Store) DueCheckpoints(ctx context.Context, minEvents int64, maxAge time.Duration, now time.Time) ([]string, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, `SELECT h.source_account_id
		FROM np_audit_chain_heads h
		LEFT JOIN np_audit_checkpoints c ON c.source_account_id = h.source_account_id
			AND c.seq = (SELECT max(seq) FROM np_audit_checkpoints WHERE source_account_id = h.source_account_id)
		WHERE c.seq IS NULL OR h.seq - c.seq >= ? OR (h.seq > c.seq AND c.created_at <= ?)
		ORDER BY h.source_account_id`, minEvents, now.Add(-maxAge).UnixMicro())
	if err != nil {
		return nil, classify(ctx, err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, classify(ctx, err)
		}
		out = append(out, a)
	}
	return out, classify(ctx, rows.Err())
}
