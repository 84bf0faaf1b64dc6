package postgres

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nself-org/nself-audit/internal/audit"
)

// Append stores a batch in one transaction. Per account, in a fixed order
// (so two writers never deadlock): lock the chain head, answer the items
// whose idempotency key was seen, link and insert the rest with one
// statement, record their keys, move the head.
//
// When every account's head is known from an earlier commit, Append first
// tries the fast path: the whole transaction in one round trip (see
// appendFast). It falls back to the locking path when another writer moved
// a head or a key turns out to be stored already.
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

	saved := saveItems(items)
	tried, err := s.appendFast(ctx, accounts, byAccount, len(items))
	if tried {
		if err == nil {
			return nil
		}
		if !fallBack(err) {
			return classify(err)
		}
		restoreItems(items, saved)
	}

	s.pipe.mu.Lock() // no batch is linked or written meanwhile (see pipeline.mu)
	defer s.pipe.mu.Unlock()
	to := map[string]chainHead{}
	err = s.inScope(ctx, audit.Scope{AccountID: accounts[0]}, pgx.TxOptions{}, func(tx pgx.Tx) error {
		for _, account := range accounts {
			h, err := appendAccount(ctx, tx, account, byAccount[account])
			if err != nil {
				return err
			}
			to[account] = h
		}
		return nil
	})
	// Under the pipeline's lock: the heads read here are where the next
	// batch links, and none was written meanwhile.
	if err != nil {
		s.pipe.forgetLocked(accounts)
		return err
	}
	for a, h := range to {
		s.pipe.spec[a] = h
	}
	return nil
}

// appendFast writes the transaction to the write pipeline (pipe.go), which
// PostgreSQL runs as one implicit transaction: scope, then per account the
// insert of the events linked to the head the last batch left, their keys,
// and advance_chain_head, which raises NSA01 (rolling everything back) unless
// the head is still where the batch was linked to. Keys are not looked up: a
// stored one makes the key insert fail with a unique violation, and the
// locking path answers it. It returns tried false, doing nothing, when the
// pipeline does not know a head.
func (s *Store) appendFast(ctx context.Context, accounts []string, byAccount map[string][]*audit.AppendItem, events int) (tried bool, err error) {
	call, tried, err := s.pipe.send(ctx, accounts, events,
		func(from map[string]chainHead) (body, tail []pipeStatement, to map[string]chainHead, err error) {
			// The scope sets the first account; later ones get their own.
			body = []pipeStatement{{writeScopeSQL, []any{accounts[0], "", AppRole}}}
			to = map[string]chainHead{}
			for _, account := range accounts {
				fresh := audit.ResolveKeys(byAccount[account], nil)
				if len(fresh) == 0 {
					continue
				}
				h := from[account]
				rows, err := linkRows(account, fresh, h)
				if err != nil {
					return nil, nil, nil, err
				}
				s.actors.skipKnown(account, rows.actors)
				if account != accounts[0] {
					body = append(body, pipeStatement{setAccountSQL, []any{account}})
				}
				body = append(body, pipeStatement{insertEventsSQL, rows.events})
				if len(accounts) > 1 {
					tail = append(tail, pipeStatement{setAccountSQL, []any{account}})
				}
				tail = append(tail, pipeStatement{advanceHeadSQL, []any{account, h.seq, h.hash, rows.head.seq, rows.head.hash, rows.head.occurredAt}})
				// Keys and rollups after the head, whose lock orders them. A
				// key inserted before it could deadlock with another
				// process's locking path, which holds the head and inserts
				// the same key.
				if rows.keys != nil {
					tail = append(tail, pipeStatement{insertKeysSQL, rows.keys})
				}
				tail = append(tail, rows.rollups()...)
				to[account] = rows.head
			}
			if len(to) == 0 {
				return nil, nil, nil, nil // every item was answered within the batch
			}
			return body, tail, to, nil
		})
	if !tried {
		return false, nil
	}
	if err == nil && call != nil {
		err = s.pipe.wait(ctx, call)
	}
	if err != nil {
		s.pipe.forget(accounts)
		return true, err
	}
	s.actors.learn(byAccount)
	s.fastCommits.Add(1)
	if call != nil && call.split {
		s.splitCommits.Add(1)
	}
	return true, nil
}

// actorSet remembers which (account, actor) pairs are in the actors rollup,
// so that a batch of known actors skips its upsert (which cost as much as
// the other two rollups together). A pair is learnt only after its batch
// committed; the set starts over when it holds maxKnownActors pairs.
type actorSet struct {
	mu    sync.Mutex
	known map[[2]string]struct{}
}

const maxKnownActors = 100_000

// skipKnown removes the actors known to be stored from actors.
func (k *actorSet) skipKnown(account string, actors map[string]bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for a := range actors {
		if _, ok := k.known[[2]string{account, a}]; ok {
			delete(actors, a)
		}
	}
}

// learn records the actors of items that were stored.
func (k *actorSet) learn(byAccount map[string][]*audit.AppendItem) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for account, items := range byAccount {
		for _, it := range items {
			if it.Err != nil || it.Replayed || it.Event.ActorID == "" {
				continue
			}
			if k.known == nil || len(k.known) >= maxKnownActors {
				k.known = map[[2]string]struct{}{}
			}
			k.known[[2]string{account, it.Event.ActorID}] = struct{}{}
		}
	}
}

// The statements of a write transaction that are not the insert's.
const (
	// writeScopeSQL is scopeSQL, the role and first account of the
	// transaction, with generic plans: each statement of a write has the
	// same best plan whatever its arrays hold, and PostgreSQL otherwise
	// planned each one again on every batch (pg_stat_statements: plans =
	// calls, about a tenth of the database's time per single-event batch).
	writeScopeSQL = scopeSQL + `, set_config('plan_cache_mode', 'force_generic_plan', true)`
	// setAccountSQL scopes the statements that follow to another account.
	setAccountSQL  = `SELECT set_config('app.source_account_id', $1, true)`
	advanceHeadSQL = `SELECT np_nself_audit.advance_chain_head($1, $2, $3, $4, $5, $6)`
)

// fallBack reports whether a fast-path failure is one the locking path
// resolves: the head moved (NSA01) or a key was stored (unique violation).
func fallBack(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "NSA01" || pgErr.Code == "23505")
}

type savedItem struct {
	event    *audit.Event
	replayed bool
	err      error
}

func saveItems(items []*audit.AppendItem) []savedItem {
	out := make([]savedItem, len(items))
	for i, it := range items {
		out[i] = savedItem{it.Event, it.Replayed, it.Err}
	}
	return out
}

func restoreItems(items []*audit.AppendItem, saved []savedItem) {
	for i, it := range items {
		it.Event, it.Replayed, it.Err = saved[i].event, saved[i].replayed, saved[i].err
	}
}

// chainHead is where an account's chain ends. occurredAt is the time of the
// event it names when the writer knows it (zero when read from the head
// row): with it, the chain head guard looks the event up in its partition
// alone (migration 0015).
type chainHead struct {
	seq        int64
	hash       string
	occurredAt time.Time
}

func appendAccount(ctx context.Context, tx pgx.Tx, account string, items []*audit.AppendItem) (chainHead, error) {
	if _, err := tx.Exec(ctx, `SELECT set_config('app.source_account_id', $1, true)`, account); err != nil {
		return chainHead{}, err
	}
	// Take (or create) the head row and hold its lock to the commit. The
	// no-op update is what locks an existing row.
	var h chainHead
	err := tx.QueryRow(ctx, `
		INSERT INTO np_nself_audit.np_audit_chain_heads AS h (source_account_id, seq, hash)
		VALUES ($1, 0, $2)
		ON CONFLICT (source_account_id) DO UPDATE SET seq = h.seq
		RETURNING seq, hash`, account, audit.GenesisHash).Scan(&h.seq, &h.hash)
	if err != nil {
		return chainHead{}, err
	}

	fresh, err := resolveKeys(ctx, tx, account, items)
	if err != nil {
		return chainHead{}, err
	}
	if len(fresh) == 0 {
		return h, nil
	}
	rows, err := linkRows(account, fresh, h)
	if err != nil {
		return chainHead{}, err
	}
	if _, err := tx.Exec(ctx, insertEventsSQL, rows.events...); err != nil {
		return chainHead{}, err
	}
	if rows.keys != nil {
		if _, err := tx.Exec(ctx, insertKeysSQL, rows.keys...); err != nil {
			return chainHead{}, err
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE np_nself_audit.np_audit_chain_heads
		SET seq = $2, hash = $3, occurred_at = $4, updated_at = now() WHERE source_account_id = $1`,
		account, rows.head.seq, rows.head.hash, rows.head.occurredAt); err != nil {
		return chainHead{}, err
	}
	for _, q := range rows.rollups() {
		if _, err := tx.Exec(ctx, q.sql, q.args...); err != nil {
			return chainHead{}, err
		}
	}
	return rows.head, nil
}

const insertEventsSQL = `
	INSERT INTO np_nself_audit.np_audit_events
		(id, source_account_id, seq, occurred_at, recorded_at, actor_id, actor_type, action,
		 resource_type, resource_id, outcome, severity, ip_address, user_agent, request_id,
		 source, metadata, prev_hash, hash)
	SELECT unnest($2::uuid[]), $1, unnest($3::int8[]), unnest($4::timestamptz[]), unnest($5::timestamptz[]),
		unnest($6::text[]), unnest($7::text[]), unnest($8::text[]), unnest($9::text[]), unnest($10::text[]),
		unnest($11::text[]), unnest($12::text[]), unnest($13::text[]), unnest($14::text[]), unnest($15::text[]),
		unnest($16::text[]), unnest($17::json[]), unnest($18::text[]), unnest($19::text[])`

// The stats rollups' upserts (migration 0007).
const (
	rollupDimsSQL = `INSERT INTO np_nself_audit.np_audit_stats_dims AS d
			(source_account_id, action, actor_type, outcome, severity, events)
		SELECT $1, a, t, o, s, n FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::int8[]) AS u(a, t, o, s, n)
		ON CONFLICT (source_account_id, action, actor_type, outcome, severity)
		DO UPDATE SET events = d.events + excluded.events`
	rollupHoursSQL = `INSERT INTO np_nself_audit.np_audit_stats_hours AS h (source_account_id, hour, events)
		SELECT $1, t, n FROM unnest($2::timestamp[], $3::int8[]) AS u(t, n)
		ON CONFLICT (source_account_id, hour) DO UPDATE SET events = h.events + excluded.events`
	rollupActorsSQL = `INSERT INTO np_nself_audit.np_audit_stats_actors (source_account_id, actor_id)
			SELECT $1, a FROM unnest($2::text[]) AS u(a) ON CONFLICT DO NOTHING`
)

const insertKeysSQL = `
	INSERT INTO np_nself_audit.np_audit_idempotency
		(source_account_id, idempotency_key, fingerprint, event_id, occurred_at)
	SELECT $1, k, f, i, o FROM unnest($2::text[], $3::text[], $4::uuid[], $5::timestamptz[]) AS t(k, f, i, o)`

// linkedRows are the arguments of insertEventsSQL and insertKeysSQL (nil
// when no item has a key) for events linked after a head, the new head, and
// the events' contribution to the stats rollups (migration 0007).
type linkedRows struct {
	events, keys []any
	head         chainHead
	account      string
	dims         map[statsDims]int64
	hours        map[time.Time]int64
	actors       map[string]bool
}

type statsDims struct{ action, actorType, outcome, severity string }

// rollups returns the upserts that add the events to the stats rollups,
// each with its keys in sorted order (concurrent upserts of the same rows
// then lock them in the same order).
func (r *linkedRows) rollups() []pipeStatement {
	dims := make([]statsDims, 0, len(r.dims))
	for d := range r.dims {
		dims = append(dims, d)
	}
	sort.Slice(dims, func(i, j int) bool {
		a, b := dims[i], dims[j]
		if a.action != b.action {
			return a.action < b.action
		}
		if a.actorType != b.actorType {
			return a.actorType < b.actorType
		}
		if a.outcome != b.outcome {
			return a.outcome < b.outcome
		}
		return a.severity < b.severity
	})
	n := len(dims)
	actions, types, outcomes, severities, counts := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]int64, n)
	for i, d := range dims {
		actions[i], types[i], outcomes[i], severities[i], counts[i] = d.action, d.actorType, d.outcome, d.severity, r.dims[d]
	}
	hours := make([]time.Time, 0, len(r.hours))
	for h := range r.hours {
		hours = append(hours, h)
	}
	sort.Slice(hours, func(i, j int) bool { return hours[i].Before(hours[j]) })
	hourCounts := make([]int64, len(hours))
	for i, h := range hours {
		hourCounts[i] = r.hours[h]
	}
	out := []pipeStatement{
		{rollupDimsSQL, []any{r.account, actions, types, outcomes, severities, counts}},
		{rollupHoursSQL, []any{r.account, hours, hourCounts}},
	}
	if len(r.actors) > 0 {
		actors := make([]string, 0, len(r.actors))
		for a := range r.actors {
			actors = append(actors, a)
		}
		sort.Strings(actors)
		out = append(out, pipeStatement{rollupActorsSQL, []any{r.account, actors}})
	}
	return out
}

// linkRows links items to the chain after h, in order, and returns the
// insert arguments.
func linkRows(account string, items []*audit.AppendItem, h chainHead) (*linkedRows, error) {
	n := len(items)
	var (
		ids                                                 = make([]uuid.UUID, n)
		actorIDs, actorTypes, actions, resTypes, resIDs     = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		outcomes, severities, ips, agents, requestIDs, srcs = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		metas, prevs, hashes                                = make([]string, n), make([]string, n), make([]string, n)
		seqs                                                = make([]int64, n)
		occurred, recorded                                  = make([]time.Time, n), make([]time.Time, n)
		keyNames, keyPrints, keyIDs                         []string
		keyTimes                                            []time.Time
	)
	seq, hash, at := h.seq, h.hash, h.occurredAt
	dims, hours, actors := map[statsDims]int64{}, map[time.Time]int64{}, map[string]bool{}
	for i, it := range items {
		e := it.Event
		dims[statsDims{e.Action, e.ActorType, e.Outcome, e.Severity}]++
		hours[e.OccurredAt.UTC().Truncate(time.Hour)]++
		if e.ActorID != "" {
			actors[e.ActorID] = true
		}
		if err := audit.Link(e, seq, hash); err != nil {
			return nil, err
		}
		seq, hash, at = e.Seq, e.Hash, e.OccurredAt
		ids[i], seqs[i], occurred[i], recorded[i] = e.ID, e.Seq, e.OccurredAt, e.RecordedAt
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
	r := &linkedRows{
		events: []any{account, ids, seqs, occurred, recorded, actorIDs, actorTypes, actions, resTypes, resIDs,
			outcomes, severities, ips, agents, requestIDs, srcs, metas, prevs, hashes},
		head:    chainHead{seq, hash, at},
		account: account, dims: dims, hours: hours, actors: actors,
	}
	if len(keyNames) > 0 {
		r.keys = []any{account, keyNames, keyPrints, keyIDs, keyTimes}
	}
	return r, nil
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
