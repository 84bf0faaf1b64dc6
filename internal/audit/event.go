// Package audit is the domain of nself-audit: the event, its validation,
// its canonical encoding and hash chain, query filters and cursors, and the
// Store interface that the storage packages implement. It imports no driver.
package audit

import (
	"encoding/hex"
	"strconv"
	"time"
	"unicode/utf8"

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
	return e.AppendJSON(make([]byte, 0, 768)), nil
}

// AppendJSON appends the event's JSON to dst: the bytes encoding/json
// gives for the event with its times as TimeFormat strings (the members in
// the struct's order, then occurred_at and recorded_at; strings and
// metadata with encoding/json's escaping of <, >, &, U+2028 and U+2029),
// written without reflection. Single-event POSTs answer with one event and
// list pages with fifty, and reflection was most of their encoding cost.
// TestEventJSONMatchesReflection and FuzzEventJSON hold the bytes to
// encoding/json's.
func (e *Event) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"id":"`...)
	dst = appendUUID(dst, e.ID)
	dst = append(dst, `","source_account_id":`...)
	dst = appendJSONString(dst, e.SourceAccountID)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendInt(dst, e.Seq, 10)
	for _, f := range [...]struct {
		name string
		v    *string
	}{
		{`,"actor_id":`, &e.ActorID}, {`,"actor_type":`, &e.ActorType}, {`,"action":`, &e.Action},
		{`,"resource_type":`, &e.ResourceType}, {`,"resource_id":`, &e.ResourceID},
		{`,"outcome":`, &e.Outcome}, {`,"severity":`, &e.Severity}, {`,"ip_address":`, &e.IPAddress},
		{`,"user_agent":`, &e.UserAgent}, {`,"request_id":`, &e.RequestID}, {`,"source":`, &e.Source},
	} {
		dst = append(dst, f.name...)
		dst = appendJSONString(dst, *f.v)
	}
	dst = append(dst, `,"metadata":`...)
	if len(e.Metadata) == 0 {
		dst = append(dst, "{}"...)
	} else {
		dst = appendHTMLEscaped(dst, e.Metadata)
	}
	dst = append(dst, `,"prev_hash":`...)
	dst = appendJSONString(dst, e.PrevHash)
	dst = append(dst, `,"hash":`...)
	dst = appendJSONString(dst, e.Hash)
	dst = append(dst, `,"occurred_at":"`...)
	dst = e.OccurredAt.UTC().AppendFormat(dst, TimeFormat)
	dst = append(dst, `","recorded_at":"`...)
	dst = e.RecordedAt.UTC().AppendFormat(dst, TimeFormat)
	return append(dst, `"}`...)
}

func appendUUID(dst []byte, id uuid.UUID) []byte {
	var b [36]byte
	hex.Encode(b[:], id[:4])
	b[8] = '-'
	hex.Encode(b[9:13], id[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id[8:10])
	b[23] = '-'
	hex.Encode(b[24:], id[10:])
	return append(dst, b[:]...)
}

// appendJSONString appends s quoted as encoding/json quotes it with HTML
// escaping on (its default): control characters, ", \, <, > and & escaped,
// invalid UTF-8 as \ufffd, U+2028 and U+2029 as escapes.
func appendJSONString(dst []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '\\', '"':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendHTMLEscaped appends canonical JSON text as encoding/json writes a
// Marshaler's output: already compact, so only <, >, &, U+2028 and U+2029
// (which occur only inside its strings) are replaced by escapes.
func appendHTMLEscaped(dst []byte, js []byte) []byte {
	const hexDigits = "0123456789abcdef"
	start := 0
	for i := 0; i < len(js); i++ {
		c := js[i]
		if c == '<' || c == '>' || c == '&' {
			dst = append(dst, js[start:i]...)
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			start = i + 1
		}
		// U+2028 and U+2029 are E2 80 A8 and E2 80 A9.
		if c == 0xE2 && i+2 < len(js) && js[i+1] == 0x80 && js[i+2]&^1 == 0xA8 {
			dst = append(dst, js[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[js[i+2]&0xf])
			i += 2
			start = i + 1
		}
	}
	return append(dst, js[start:]...)
}
