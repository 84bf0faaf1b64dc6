package postgres

import (
	"context"
	"sort"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/nself-org/nself-audit/internal/audit"
)

// Append stores a batch in one transaction. Per account, in a fixed order
// (so two writers never deadlock): lock the chain head, answer the items
// whose idempotency key was seen, link and insert the rest with one
// statement, record their keys, move the head.
func (s *Store) Append(ctx context.Context, items []*audit.AppendItem) error {
	if len(items) == 0 {
		return nil
	}
	byAccount := map[string][]*audit.AppendItem{}
	for _, it := range items {
		a := it.Event.SourceAccountID
		byAccount[a] = append(byAccount[a], it)
	}
	accounts := make([]string, 0, len(byAccount))
	for a := range byAccount {
		accounts = append(accounts, a)
	}
	sort.Strings(accounts)

	return s.inScope(ctx, audit.Scope{AccountID: accounts[0]}, pgx.TxOptions{}, func(tx pgx.Tx) error {
		for _, account := range accounts {
			if err := appendAccount(ctx, tx, account, byAccount[account]); err != nil {
				return err
			}
		}
		return nil
	})
}

func appendAccount(ctx context.Context, tx pgx.Tx, account string, items []*audit.AppendItem) error {
	if _, err := tx.Exec(ctx, `SELECT set_config('app.source_account_id', $1, true)`, account); err != nil {
		return err
	}
	// Take (or create) the head row and hold its lock to the commit. The
	// no-op update is what locks an existing row.
	var seq int64
	var hash string
	err := tx.QueryRow(ctx, `
		INSERT INTO np_nself_audit.np_audit_chain_heads AS h (source_account_id, seq, hash)
		VALUES ($1, 0, $2)
		ON CONFLICT (source_account_id) DO UPDATE SET seq = h.seq
		RETURNING seq, hash`, account, audit.GenesisHash).Scan(&seq, &hash)
	if err != nil {
		return err
	}

	fresh, err := resolveKeys(ctx, tx, account, items)
	if err != nil {
		return err
	}
	if len(fresh) == 0 {
		return nil
	}

	n := len(fresh)
	var (
		ids, actorIDs, actorTypes, actions, resTypes, resIDs = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		outcomes, severities, ips, agents, requestIDs, srcs  = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		metas, prevs, hashes                                 = make([]string, n), make([]string, n), make([]string, n)
		seqs                                                 = make([]int64, n)
		occurred, recorded                                   = make([]any, n), make([]any, n)
		keyNames, keyPrints, keyIDs                          []string
		keyTimes                                             []any
	)
	for i, it := range fresh {
		e := it.Event
		if err := audit.Link(e, seq, hash); err != nil {
			return err
		}
		seq, hash = e.Seq, e.Hash
		ids[i], seqs[i], occurred[i], recorded[i] = e.ID.String(), e.Seq, e.OccurredAt, e.RecordedAt
		actorIDs[i], actorTypes[i], actions[i] = e.ActorID, e.ActorType, e.Action
		resTypes[i], resIDs[i], outcomes[i], severities[i] = e.ResourceType, e.ResourceID, e.Outcome, e.Severity
		ips[i], agents[i], requestIDs[i], srcs[i] = e.IPAddress, e.UserAgent, e.RequestID, e.Source
		metas[i], prevs[i], hashes[i] = string(e.Metadata), e.PrevHash, e.Hash
		if it.IdempotencyKey != "" {
			keyNames = append(keyNames, it.IdempotencyKey)
			keyPrints = append(keyPrints, it.Fingerprint)
			keyIDs = append(keyIDs, e.ID.String())
			keyTimes = append(keyTimes, e.OccurredAt)
		}
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO np_nself_audit.np_audit_events
			(id, source_account_id, seq, occurred_at, recorded_at, actor_id, actor_type, action,
			 resource_type, resource_id, outcome, severity, ip_address, user_agent, request_id,
			 source, metadata, prev_hash, hash)
		SELECT id, $1, seq, occurred_at, recorded_at, actor_id, actor_type, action,
			 resource_type, resource_id, outcome, severity, ip_address, user_agent, request_id,
			 source, metadata, prev_hash, hash
		FROM unnest($2::uuid[], $3::int8[], $4::timestamptz[], $5::timestamptz[], $6::text[], $7::text[],
			$8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
			$15::text[], $16::text[], $17::json[], $18::text[], $19::text[])
			AS t(id, seq, occurred_at, recorded_at, actor_id, actor_type, action, resource_type,
			     resource_id, outcome, severity, ip_address, user_agent, request_id, source,
			     metadata, prev_hash, hash)`,
		account, ids, seqs, occurred, recorded, actorIDs, actorTypes, actions, resTypes, resIDs,
		outcomes, severities, ips, agents, requestIDs, srcs, metas, prevs, hashes); err != nil {
		return err
	}
	if len(keyNames) > 0 {
		if _, err := tx.Exec(ctx, `
			INSERT INTO np_nself_audit.np_audit_idempotency
				(source_account_id, idempotency_key, fingerprint, event_id, occurred_at)
			SELECT $1, k, f, i, o FROM unnest($2::text[], $3::text[], $4::uuid[], $5::timestamptz[]) AS t(k, f, i, o)`,
			account, keyNames, keyPrints, keyIDs, keyTimes); err != nil {
			return err
		}
	}
	_, err = tx.Exec(ctx, `UPDATE np_nself_audit.np_audit_chain_heads
		SET seq = $2, hash = $3, updated_at = now() WHERE source_account_id = $1`, account, seq, hash)
	return err
}

// resolveKeys answers the items whose idempotency key is already stored or
// repeats an earlier item of the batch, and returns the items to insert. It
// runs while the account's head is locked, so a concurrent writer's key is
// committed and visible by then.
func resolveKeys(ctx context.Context, tx pgx.Tx, account string, items []*audit.AppendItem) ([]*audit.AppendItem, error) {
	var keys []string
	for _, it := range items {
		if it.IdempotencyKey != "" {
			keys = append(keys, it.IdempotencyKey)
		}
	}
	if len(keys) == 0 {
		return items, nil
	}
	type stored struct {
		fingerprint string
		id          uuid.UUID
	}
	known := map[string]stored{}
	rows, err := tx.Query(ctx, `SELECT idempotency_key, fingerprint, event_id FROM np_nself_audit.np_audit_idempotency
		WHERE source_account_id = $1 AND idempotency_key = ANY($2)`, account, keys)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var k string
		var st stored
		if err := rows.Scan(&k, &st.fingerprint, &st.id); err != nil {
			rows.Close()
			return nil, err
		}
		known[k] = st
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var replayIDs []uuid.UUID
	for _, st := range known {
		replayIDs = append(replayIDs, st.id)
	}
	originals := map[uuid.UUID]*audit.Event{}
	if len(replayIDs) > 0 {
		evs, err := queryEvents(ctx, tx, `SELECT `+eventColumns+` FROM np_nself_audit.np_audit_events
			WHERE source_account_id = $1 AND id = ANY($2)`, account, replayIDs)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			originals[e.ID] = e
		}
	}

	storedKeys := make(map[string]audit.StoredKey, len(known))
	for k, st := range known {
		storedKeys[k] = audit.StoredKey{Fingerprint: st.fingerprint, Event: originals[st.id]}
	}
	return audit.ResolveKeys(items, storedKeys), nil
}
