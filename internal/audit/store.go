package audit

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// Scope is what one caller may see: one account and, when ActorID is not
// empty, only the events whose actor_id equals it. Every read takes a scope
// explicitly; the store enforces it (in PostgreSQL, by row-level security).
type Scope struct {
	AccountID string
	ActorID   string
}

// AppendItem is one event handed to Store.Append and what became of it.
type AppendItem struct {
	// Event is the validated event. On success the store sets Seq, PrevHash
	// and Hash; on a replay it is replaced by the event stored first.
	Event *Event
	// IdempotencyKey, when set, makes the append happen at most once per
	// account and key. Fingerprint tells a retry from a reuse of the key.
	IdempotencyKey string
	Fingerprint    string
	// Group, when set, binds the items of one request under one
	// idempotency key (a batch): if any of them is answered from an earlier
	// use of its key, none of them is stored.
	Group string

	// Replayed is set when the key was used before by the same request: Event
	// is then the original event and nothing new was stored.
	Replayed bool
	// Err is set for an item that was not stored while the others were (for
	// example ECONFLICT: the key was used for another event).
	Err error
}

// Stats summarises the events that match a filter.
type Stats struct {
	Total          int64            `json:"total"`
	FirstEventAt   *string          `json:"first_event_at"`
	LastEventAt    *string          `json:"last_event_at"`
	DistinctActors int64            `json:"distinct_actors"`
	ByAction       []ActionCount    `json:"by_action"`
	ByActorType    map[string]int64 `json:"by_actor_type"`
	ByOutcome      map[string]int64 `json:"by_outcome"`
	BySeverity     map[string]int64 `json:"by_severity"`
	Timeline       []Bucket         `json:"timeline"`
}

// TopActions is how many actions Stats.ByAction lists.
const TopActions = 20

// ActionCount is one row of Stats.ByAction.
type ActionCount struct {
	Action string `json:"action"`
	Count  int64  `json:"count"`
}

// Bucket is one non-empty interval of Stats.Timeline.
type Bucket struct {
	Bucket string `json:"bucket"` // start of the interval, TimeFormat
	Count  int64  `json:"count"`
}

// MigrationStatus is what /health reports of the schema.
type MigrationStatus struct {
	Applied  int `json:"applied"`
	Expected int `json:"expected"`
}

// Store keeps events. Every method is one transaction. Errors are *Error
// values where the caller can act on them: ENOTFOUND, EUNAVAILABLE when the
// database does not answer; anything else is internal.
type Store interface {
	// Append stores the items' events in one transaction, each appended to
	// its account's chain in slice order, and returns only after the
	// commit. A non-nil error means nothing was stored. Items whose
	// idempotency key was seen before are answered from the first event
	// (Replayed, or Err ECONFLICT) without storing anything.
	Append(ctx context.Context, items []*AppendItem) error

	// Event returns the event with this id within scope, or ENOTFOUND.
	Event(ctx context.Context, scope Scope, id uuid.UUID) (*Event, error)

	// Events returns at most f.Limit+1 events within scope matching f, in the
	// filter's order (occurred_at, then id), after f.After when set. The
	// extra event tells the caller that another page exists.
	Events(ctx context.Context, scope Scope, f Filter) ([]*Event, error)

	// Chain returns at most limit events of scope.AccountID with seq >
	// afterSeq, in seq order: the account's hash chain, page by page.
	// scope.ActorID must be empty; a chain is never partial by actor.
	Chain(ctx context.Context, scope Scope, afterSeq int64, limit int) ([]*Event, error)

	// EventsBySeq returns at most limit (≥ 1) events within scope matching
	// f (its paging fields are ignored) with afterSeq < seq ≤ toSeq (toSeq
	// 0: no upper bound), in seq order: the account's chain seen through
	// a filter, page by page. The live tail and the filtered export read it.
	EventsBySeq(ctx context.Context, scope Scope, f Filter, afterSeq, toSeq int64, limit int) ([]*Event, error)

	// Head returns the seq and hash of the account's last event as the
	// store records it (0 and GenesisHash without events), to tell a
	// chain whose newest events were removed from a shorter one.
	Head(ctx context.Context, scope Scope) (int64, string, error)

	// Stats summarises the events within scope matching f (paging fields
	// are ignored).
	Stats(ctx context.Context, scope Scope, f Filter, iv Interval) (*Stats, error)

	// Checkpoint signs the account's chain head with sign, unless the
	// account's latest checkpoint already covers it: then it returns that
	// one and false. It holds the account's head lock, so checkpoints of an
	// account chain one after another, from any number of processes. It is
	// ENOTFOUND when the account has no events. The new checkpoint's
	// SourceAccountID, Seq, Hash, PrevSignature and CreatedAt (now) are set
	// before sign is called.
	Checkpoint(ctx context.Context, scope Scope, now time.Time, sign func(*Checkpoint) error) (*Checkpoint, bool, error)

	// Checkpoints returns at most limit checkpoints of the account with
	// fromSeq <= seq <= toSeq (0: unbounded), in seq order.
	Checkpoints(ctx context.Context, scope Scope, fromSeq, toSeq int64, limit int) ([]*Checkpoint, error)

	// LatestCheckpoint returns the account's newest checkpoint, or ENOTFOUND.
	LatestCheckpoint(ctx context.Context, scope Scope) (*Checkpoint, error)

	// DueCheckpoints lists, in order, the accounts whose chain head is
	// ahead of their latest checkpoint by at least minEvents events, or
	// ahead at all while that checkpoint is older than maxAge at now or
	// does not exist.
	DueCheckpoints(ctx context.Context, minEvents int64, maxAge time.Duration, now time.Time) ([]string, error)

	// Migrations reports how many migrations are applied and expected. It
	// is EUNAVAILABLE when the database does not answer.
	Migrations(ctx context.Context) (MigrationStatus, error)

	Close() error
}

// FormatTimePtr formats t for Stats, nil for the zero time.
func FormatTimePtr(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := FormatTime(t)
	return &s
}

// StoredKey is what a store found for an idempotency key already used.
type StoredKey struct {
	Fingerprint string
	Event       *Event // the event stored under the key; nil if not visible
}

// ResolveKeys answers the items whose idempotency key is in known or
// repeats an earlier item of the batch (Replayed with the original event,
// or Err ECONFLICT when the fingerprint differs), and returns the items
// still to be stored. Stores call it while the account's chain head is
// locked, so known is complete.
func ResolveKeys(items []*AppendItem, known map[string]StoredKey) []*AppendItem {
	firstInBatch := map[string]*AppendItem{}
	var fresh []*AppendItem
	for _, it := range items {
		k := it.IdempotencyKey
		if k == "" {
			fresh = append(fresh, it)
			continue
		}
		if st, ok := known[k]; ok {
			answerReplay(it, st.Fingerprint, st.Event)
			continue
		}
		if first, ok := firstInBatch[k]; ok {
			answerReplay(it, first.Fingerprint, first.Event)
			continue
		}
		firstInBatch[k] = it
		fresh = append(fresh, it)
	}
	// A group stands or falls together: a batch retried with other events
	// under the same key stores none of them.
	answered := map[string]bool{}
	for _, it := range items {
		if it.Group != "" && (it.Replayed || it.Err != nil) {
			answered[it.Group] = true
		}
	}
	if len(answered) == 0 {
		return fresh
	}
	kept := fresh[:0]
	for _, it := range fresh {
		if it.Group != "" && answered[it.Group] {
			it.Err = Errorf(ECONFLICT, "Idempotency-Key was already used for a different batch")
			continue
		}
		kept = append(kept, it)
	}
	return kept
}

func answerReplay(it *AppendItem, fingerprint string, original *Event) {
	switch {
	case fingerprint != it.Fingerprint:
		it.Err = Errorf(ECONFLICT, "Idempotency-Key was already used for a different event")
	case original == nil: // cannot happen while the tables are append-only
		it.Err = Errorf(ECONFLICT, "Idempotency-Key was already used; its event is not visible")
	default:
		it.Event, it.Replayed = original, true
	}
}
