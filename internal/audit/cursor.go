package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Cursor is a position in a sorted list of events: the sort key of the last
// event of a page.
type Cursor struct {
	OccurredAt time.Time
	ID         uuid.UUID
}

// CursorCodec encodes cursors as opaque strings that carry an HMAC, so a
// client can neither forge a position nor reuse a cursor with other filters
// or another sort order.
type CursorCodec struct{ key []byte }

// NewCursorCodec returns a codec keyed by key. Every process serving the
// same clients must use the same key.
func NewCursorCodec(key []byte) *CursorCodec {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("nself-audit cursor v1"))
	return &CursorCodec{key: mac.Sum(nil)}
}

const (
	cursorVersion = 1
	cursorBody    = 1 + 8 + 16 + 16 // version, occurred_at µs, id, filter digest
	cursorMAC     = 16
)

// Encode returns the cursor that continues f after the event last. scope
// names who may use it (account and actor restriction).
func (c *CursorCodec) Encode(scope Scope, f Filter, last *Event) string {
	b := make([]byte, 0, cursorBody+cursorMAC)
	b = append(b, cursorVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(last.OccurredAt.UnixMicro()))
	b = append(b, last.ID[:]...)
	b = append(b, filterDigest(scope, f)...)
	return base64.RawURLEncoding.EncodeToString(append(b, c.mac(b)...))
}

// Decode checks s and returns its position. It is an EINVALID error when s
// is malformed, was altered, or was made for other filters.
func (c *CursorCodec) Decode(scope Scope, f Filter, s string) (*Cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != cursorBody+cursorMAC || b[0] != cursorVersion {
		return nil, Errorf(EINVALID, "cursor: malformed; pass next_cursor exactly as it was returned")
	}
	body, mac := b[:cursorBody], b[cursorBody:]
	if !hmac.Equal(mac, c.mac(body)) {
		return nil, Errorf(EINVALID, "cursor: not issued by this service")
	}
	if !hmac.Equal(body[25:], filterDigest(scope, f)) {
		return nil, Errorf(EINVALID, "cursor: made for other filters or sort order; keep the query the same while paging")
	}
	var id uuid.UUID
	copy(id[:], body[9:25])
	micros := int64(binary.BigEndian.Uint64(body[1:9]))
	return &Cursor{OccurredAt: time.UnixMicro(micros).UTC(), ID: id}, nil
}

func (c *CursorCodec) mac(b []byte) []byte {
	m := hmac.New(sha256.New, c.key)
	m.Write(b)
	return m.Sum(nil)[:cursorMAC]
}

// filterDigest binds a cursor to the query it came from.
func filterDigest(scope Scope, f Filter) []byte {
	h := sha256.New()
	fmt.Fprintf(h, "%q %q|", scope.AccountID, scope.ActorID)
	for _, s := range []string{f.ActorID, f.ActorType, f.Action, f.ActionPrefix, f.ResourceType, f.ResourceID,
		f.Outcome, f.Severity, f.Source, timeKey(f.Since), timeKey(f.Until), fmt.Sprint(f.Asc)} {
		fmt.Fprintf(h, "%q|", s)
	}
	return h.Sum(nil)[:16]
}

func timeKey(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}
