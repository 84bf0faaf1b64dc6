// Package audit is the domain of nself-audit: the event, its validation,
// its canonical encoding and hash chain, query filters and cursors, and the
// Store interface that the storage packages implement. It imports no driver.
package audit

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// DefaultAccount is the account of callers that name none, as in every nSelf
// plugin table (source_account_id DEFAULT 'primary').
const DefaultAccount = "primary"

// Event is one stored audit event. Text fields that were not given are "",
// never null, so that an event has one shape and one canonical encoding.
type Event struct {
	ID              uuid.UUID     `json:"id"`
	SourceAccountID string        `json:"source_account_id"`
	Seq             int64         `json:"seq"`
	OccurredAt      time.Time     `json:"occurred_at"`
	RecordedAt      time.Time     `json:"recorded_at"`
	ActorID         string        `json:"actor_id"`
	ActorType       string        `json:"actor_type"`
	Action          string        `json:"action"`
	ResourceType    string        `json:"resource_type"`
	ResourceID      string        `json:"resource_id"`
	Outcome         string        `json:"outcome"`
	Severity        string        `json:"severity"`
	IPAddress       string        `json:"ip_address"`
	UserAgent       string        `json:"user_agent"`
	RequestID       string        `json:"request_id"`
	Source          string        `json:"source"`
	Metadata        CanonicalJSON `json:"metadata"`
	PrevHash        string        `json:"prev_hash"`
	Hash            string        `json:"hash"`
}

// Actor types, outcomes and severities accepted on input.
var (
	ActorTypes = []string{"user", "system", "plugin", "api_key", "service"}
	Outcomes   = []string{"success", "failure", "denied"}
	Severities = []string{"info", "warning", "error", "critical"}
)

// Limits on input. They keep one row small and bounded; metadata is the only
// free-form part.
const (
	MaxActionLen       = 128
	MaxActorIDLen      = 256
	MaxResourceTypeLen = 128
	MaxResourceIDLen   = 512
	MaxUserAgentLen    = 1024
	MaxRequestIDLen    = 256
	MaxSourceLen       = 128
	MaxIdempotencyLen  = 255
	MaxMetadataBytes   = 64 << 10
	// MaxFutureSkew bounds how far ahead of the server's clock occurred_at
	// may be: enough for skewed clocks, not enough to plant events "later".
	MaxFutureSkew = 24 * time.Hour
)

func oneOf(s string, set []string) bool {
	for _, v := range set {
		if s == v {
			return true
		}
	}
	return false
}

// Microsecond is the time resolution of stored events (PostgreSQL's), so a
// time hashes the same before and after a round trip through the database.
func truncTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// TimeFormat is the one textual form of a time in canonical encodings and
// API responses: UTC, always six fractional digits.
const TimeFormat = "2006-01-02T15:04:05.000000Z"

// FormatTime formats t in TimeFormat.
func FormatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

// MarshalJSON writes times in TimeFormat, the form the hash covers, so an
// event read from the API can be rehashed as it is.
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event
	return json.Marshal(struct {
		plain
		OccurredAt string `json:"occurred_at"`
		RecordedAt string `json:"recorded_at"`
	}{plain(e), FormatTime(e.OccurredAt), FormatTime(e.RecordedAt)})
}
