package client

import (
	"encoding/json"
	"net/url"
	"strconv"
	"time"
)

// TimeFormat is the service's form of a time: UTC, six fractional digits.
// It is the form the event hash covers.
const TimeFormat = "2006-01-02T15:04:05.000000Z"

func formatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

// Event is a stored event, as every route returns it.
type Event struct {
	ID              string          `json:"id"` // a UUIDv7
	SourceAccountID string          `json:"source_account_id"`
	Seq             int64           `json:"seq"` // position in the account's chain, from 1
	ActorID         string          `json:"actor_id"`
	ActorType       string          `json:"actor_type"`
	Action          string          `json:"action"`
	ResourceType    string          `json:"resource_type"`
	ResourceID      string          `json:"resource_id"`
	Outcome         string          `json:"outcome"`
	Severity        string          `json:"severity"`
	IPAddress       string          `json:"ip_address"`
	UserAgent       string          `json:"user_agent"`
	RequestID       string          `json:"request_id"`
	Source          string          `json:"source"`
	Metadata        json.RawMessage `json:"metadata"` // the canonical JSON object, exactly as sent
	PrevHash        string          `json:"prev_hash"`
	Hash            string          `json:"hash"`
	OccurredAt      time.Time       `json:"occurred_at"`
	RecordedAt      time.Time       `json:"recorded_at"`
}

// MarshalJSON writes the event as the service does: the same members in
// the same order, times in TimeFormat, and <, > and & in strings escaped
// as \u003c, \u003e and \u0026.
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event
	if e.Metadata == nil {
		e.Metadata = json.RawMessage("{}")
	}
	return json.Marshal(struct {
		plain
		OccurredAt string `json:"occurred_at"`
		RecordedAt string `json:"recorded_at"`
	}{plain(e), formatTime(e.OccurredAt), formatTime(e.RecordedAt)})
}

// NewEvent is an event to record (the body of POST /api/v1/events). Empty
// fields are not sent, so the service's defaults apply (actor_type user,
// outcome success, severity info, occurred_at now, metadata {}); see
// docs/API.md for the rules of each field.
type NewEvent struct {
	Action       string          `json:"action"`
	ActorID      string          `json:"actor_id,omitempty"`
	ActorType    string          `json:"actor_type,omitempty"`
	ResourceType string          `json:"resource_type,omitempty"`
	ResourceID   string          `json:"resource_id,omitempty"`
	Outcome      string          `json:"outcome,omitempty"`
	Severity     string          `json:"severity,omitempty"`
	OccurredAt   time.Time       `json:"-"` // zero: the service's clock
	IPAddress    string          `json:"ip_address,omitempty"`
	UserAgent    string          `json:"user_agent,omitempty"`
	RequestID    string          `json:"request_id,omitempty"`
	Source       string          `json:"source,omitempty"` // "": the client's WithSourcePlugin, if any
	Metadata     json.RawMessage `json:"metadata,omitempty"`

	// IdempotencyKey is sent as the Idempotency-Key header of PostEvent;
	// empty, the client generates one. A batch takes one key for all its
	// events (PostBatch's argument): it must be empty there.
	IdempotencyKey string `json:"-"`
}

// MarshalJSON writes the request body, with occurred_at in TimeFormat when
// it is set.
func (n NewEvent) MarshalJSON() ([]byte, error) {
	type plain NewEvent
	v := struct {
		plain
		OccurredAt string `json:"occurred_at,omitempty"`
	}{plain: plain(n)}
	if !n.OccurredAt.IsZero() {
		v.OccurredAt = n.OccurredAt.UTC().Format(time.RFC3339Nano)
	}
	return marshal(v)
}

// Filter selects events; empty fields do not filter. It is the query of the
// list, stats, stream and export routes.
type Filter struct {
	ActorID      string
	ActorType    string // user, system, plugin, api_key, service
	Action       string // exact (user.login) or a prefix (user.*)
	ResourceType string
	ResourceID   string
	Outcome      string // success, failure, denied
	Severity     string // info, warning, error, critical
	Source       string
	Since        time.Time // occurred_at >= Since; zero: no bound
	Until        time.Time // occurred_at < Until; zero: no bound
}

func (f Filter) values() url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("actor_id", f.ActorID)
	set("actor_type", f.ActorType)
	set("action", f.Action)
	set("resource_type", f.ResourceType)
	set("resource_id", f.ResourceID)
	set("outcome", f.Outcome)
	set("severity", f.Severity)
	set("source", f.Source)
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	if !f.Until.IsZero() {
		q.Set("until", f.Until.UTC().Format(time.RFC3339Nano))
	}
	return q
}

// ListOptions is the query of GET /api/v1/events.
type ListOptions struct {
	Filter
	Limit  int    // page size, 1 to 1000; 0: the service's default (50)
	Sort   string // "desc" (default, newest first) or "asc"
	Cursor string // the NextCursor of the previous page, exactly as received
}

func (o ListOptions) values() url.Values {
	q := o.Filter.values()
	if o.Limit != 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Sort != "" {
		q.Set("sort", o.Sort)
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	return q
}

// EventPage is one page of a list.
type EventPage struct {
	Events     []Event `json:"events"`
	NextCursor *string `json:"next_cursor"` // nil on the last page
}

// Batch is the answer of PostBatch.
type Batch struct {
	Events []Event `json:"events"` // the stored events, in the order sent

	// Replayed is true when the key had stored this batch before: the
	// events are those stored then, and nothing new was stored.
	Replayed bool `json:"-"`
}

// Stats summarises the events that match a filter (GET /api/v1/stats).
type Stats struct {
	Total          int64            `json:"total"`
	FirstEventAt   *time.Time       `json:"first_event_at"` // nil when Total is 0
	LastEventAt    *time.Time       `json:"last_event_at"`
	DistinctActors int64            `json:"distinct_actors"`
	ByAction       []ActionCount    `json:"by_action"` // the 20 most frequent actions
	ByActorType    map[string]int64 `json:"by_actor_type"`
	ByOutcome      map[string]int64 `json:"by_outcome"`
	BySeverity     map[string]int64 `json:"by_severity"`
	Timeline       []Bucket         `json:"timeline"`
}

// MarshalJSON writes the stats as the service does.
func (s Stats) MarshalJSON() ([]byte, error) {
	tp := func(t *time.Time) *string {
		if t == nil {
			return nil
		}
		v := formatTime(*t)
		return &v
	}
	nonNil := func(m map[string]int64) map[string]int64 {
		if m == nil {
			return map[string]int64{}
		}
		return m
	}
	if s.ByAction == nil {
		s.ByAction = []ActionCount{}
	}
	if s.Timeline == nil {
		s.Timeline = []Bucket{}
	}
	return marshal(struct {
		Total          int64            `json:"total"`
		FirstEventAt   *string          `json:"first_event_at"`
		LastEventAt    *string          `json:"last_event_at"`
		DistinctActors int64            `json:"distinct_actors"`
		ByAction       []ActionCount    `json:"by_action"`
		ByActorType    map[string]int64 `json:"by_actor_type"`
		ByOutcome      map[string]int64 `json:"by_outcome"`
		BySeverity     map[string]int64 `json:"by_severity"`
		Timeline       []Bucket         `json:"timeline"`
	}{s.Total, tp(s.FirstEventAt), tp(s.LastEventAt), s.DistinctActors, s.ByAction,
		nonNil(s.ByActorType), nonNil(s.ByOutcome), nonNil(s.BySeverity), s.Timeline})
}

// ActionCount is one row of Stats.ByAction.
type ActionCount struct {
	Action string `json:"action"`
	Count  int64  `json:"count"`
}

// Bucket is one non-empty hour or day of Stats.Timeline.
type Bucket struct {
	Bucket time.Time `json:"bucket"` // the start of the interval (UTC)
	Count  int64     `json:"count"`
}

// MarshalJSON writes the bucket as the service does.
func (b Bucket) MarshalJSON() ([]byte, error) {
	return marshal(struct {
		Bucket string `json:"bucket"`
		Count  int64  `json:"count"`
	}{formatTime(b.Bucket), b.Count})
}

// StatsOptions is the query of GET /api/v1/stats.
type StatsOptions struct {
	Filter
	Interval string // "day" (default) or "hour": the width of Timeline's buckets
}

// VerifyResult is the answer of GET /api/v1/verify: always 200 when the
// check ran, whatever it found.
type VerifyResult struct {
	OK             bool       `json:"ok"`
	Checked        int64      `json:"checked"` // events that verified before the walk stopped
	Head           VerifyHead `json:"head"`
	FirstBrokenSeq *int64     `json:"first_broken_seq"` // nil when OK
	Reason         string     `json:"reason"`
}

// VerifyHead is a chain position.
type VerifyHead struct {
	Seq  int64  `json:"seq"`
	Hash string `json:"hash"`
}

// SeqRange bounds a chain walk: FromSeq <= seq <= ToSeq, each 0 for no bound.
type SeqRange struct {
	FromSeq int64
	ToSeq   int64
}

func (r SeqRange) values(q url.Values) url.Values {
	if q == nil {
		q = url.Values{}
	}
	if r.FromSeq != 0 {
		q.Set("from_seq", strconv.FormatInt(r.FromSeq, 10))
	}
	if r.ToSeq != 0 {
		q.Set("to_seq", strconv.FormatInt(r.ToSeq, 10))
	}
	return q
}

// Checkpoint is a signed statement that an account's chain had this head at
// this time (docs/CHAIN.md#signed-checkpoints).
type Checkpoint struct {
	SourceAccountID string    `json:"source_account_id"`
	Seq             int64     `json:"seq"`
	Hash            string    `json:"hash"`
	PrevSignature   string    `json:"prev_signature"` // "" for the account's first
	KeyID           string    `json:"key_id"`
	Signature       string    `json:"signature"` // standard base64 of the Ed25519 signature
	CreatedAt       time.Time `json:"created_at"`
}

// MarshalJSON writes the checkpoint as the service does (created_at in
// TimeFormat, the form that is signed).
func (c Checkpoint) MarshalJSON() ([]byte, error) {
	type plain Checkpoint
	return json.Marshal(struct {
		plain
		CreatedAt string `json:"created_at"`
	}{plain(c), formatTime(c.CreatedAt)})
}

// CheckpointList is the answer of GET /api/v1/checkpoints.
type CheckpointList struct {
	Checkpoints []Checkpoint `json:"checkpoints"`
}

// CheckpointOptions is the query of GET /api/v1/checkpoints.
type CheckpointOptions struct {
	SeqRange
	Limit int // 1 to 1000; 0: the service's default (1000)
}

// PublicKey is the key that verifies the service's new checkpoints.
type PublicKey struct {
	Algorithm string `json:"algorithm"` // "ed25519"
	KeyID     string `json:"key_id"`
	PublicKey string `json:"public_key"` // standard base64 of the 32-byte key
}
