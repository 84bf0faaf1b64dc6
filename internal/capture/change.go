// Package capture turns data changes into audit events without code in the
// services that make them: Hasura event-trigger deliveries (DecodeHasura)
// and rows staged by the PostgreSQL capture trigger (Mover). Both become a
// Change, which maps to an event the same way: action <table>.<op>, the
// row's key as resource, the changed columns as metadata, secret-looking
// members redacted. The package imports no driver.
package capture

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/nself-org/nself-audit/internal/audit"
)

// Operations of a change, as Hasura and PostgreSQL name them.
const (
	OpInsert = "INSERT"
	OpUpdate = "UPDATE"
	OpDelete = "DELETE"
	OpManual = "MANUAL" // Hasura only: a trigger invoked by hand on a row
)

// Change is one captured row change.
type Change struct {
	Schema, Table string
	Op            string
	// Old and New are the row before and after (nil when absent). With
	// Diffed they hold only the columns that changed (the capture trigger
	// compares them before it redacts); otherwise whole rows, compared here.
	Old, New map[string]any
	Diffed   bool
	// Key holds the values of the key columns, in order; KeyColumns names
	// them, so that a secret-looking key column is redacted here too.
	Key        []any
	KeyColumns []string

	Account    string // "" when the change names none
	ActorID    string // "" for a change made without a user: actor_type system
	Role       string
	RequestID  string
	Source     string
	OccurredAt time.Time // zero: the time of recording
	// Extra members of the event's metadata (identifiers of the delivery,
	// the database user, the session); redacted like the rows.
	Extra map[string]any
}

// Redacted is what a secret-looking member's value becomes.
const Redacted = "[redacted]"

// DefaultSecretPatterns are the name parts that make a column secret.
var DefaultSecretPatterns = []string{"password", "token", "secret", "api_key"}

// Redactor decides which member names look secret: a name does when,
// lowercased and without "_" and "-", it contains one of its patterns
// (normalised the same way), so "api_key" also covers apiKey and
// x-api-key. The zero value is not usable; see NewRedactor.
type Redactor struct{ patterns []string }

var noRedaction = &Redactor{}

// NewRedactor returns a Redactor for the default patterns and extra ones.
func NewRedactor(extra []string) *Redactor {
	r := &Redactor{}
	for _, p := range append(append([]string{}, DefaultSecretPatterns...), extra...) {
		if n := NormalizeName(p); n != "" {
			r.patterns = append(r.patterns, n)
		}
	}
	return r
}

// NormalizeName is a member name or pattern as Redactor compares it.
func NormalizeName(s string) string {
	return strings.ToLower(strings.NewReplacer("_", "", "-", "").Replace(s))
}

// Secret reports whether a member named name is redacted.
func (r *Redactor) Secret(name string) bool {
	n := NormalizeName(name)
	for _, p := range r.patterns {
		if strings.Contains(n, p) {
			return true
		}
	}
	return false
}

// ParsePatterns parses a comma-separated list of extra secret patterns
// (NSELF_AUDIT_REDACT_COLUMNS). Blank entries are skipped.
func ParsePatterns(s string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if len(p) > 63 || strings.IndexFunc(p, func(r rune) bool { return unicode.IsControl(r) || r == '"' || r == '\\' }) >= 0 || NormalizeName(p) == "" {
			return nil, fmt.Errorf("%q is not a column name pattern (1 to 63 characters, no quotes, backslashes or control characters)", p)
		}
		out = append(out, p)
	}
	return out, nil
}

// QualifiedName is how a table is named in actions and resource types:
// its name, prefixed with its schema unless that is public.
func QualifiedName(schema, table string) string {
	if schema == "public" || schema == "" {
		return table
	}
	return schema + "." + table
}

// Action is the action of a change of op on schema.table, or EINVALID
// when the names cannot form one (action names are dot notation of
// letters, digits, _ and -).
func Action(schema, table, op string) (string, error) {
	a := QualifiedName(schema, table) + "." + strings.ToLower(op)
	if !audit.ValidAction(a) {
		return "", audit.Errorf(audit.EINVALID, "table %s: its name cannot form an action (<table>.%s: letters, digits, _ and - between dots, at most %d characters)",
			strconvQuote(QualifiedName(schema, table)), strings.ToLower(op), audit.MaxActionLen)
	}
	return a, nil
}

func strconvQuote(s string) string { return strconv.Quote(audit.Clip(s, 128)) }

// Input maps the change to an event input: action <table>.<op>, actor
// from the session (actor_type user) or none (system), resource type the
// table, resource id the key, metadata the changed columns (whole row for
// inserts, deletes and manual invocations) with secret-looking members
// redacted at any depth. Metadata that would exceed the event limit has
// its largest values replaced (see FitMetadata). The caller validates the
// input with the change's account.
func (c *Change) Input(r *Redactor) (*audit.EventInput, error) {
	action, err := Action(c.Schema, c.Table, c.Op)
	if err != nil {
		return nil, err
	}
	in := &audit.EventInput{
		ActorID:      c.ActorID,
		ActorType:    "user",
		Action:       action,
		ResourceType: QualifiedName(c.Schema, c.Table),
		ResourceID:   c.resourceID(r),
		RequestID:    c.RequestID,
		Source:       c.Source,
	}
	if c.ActorID == "" {
		in.ActorType = "system"
	}
	if !c.OccurredAt.IsZero() {
		t := audit.FormatTime(c.OccurredAt)
		in.OccurredAt = &t
	}
	meta := map[string]any{}
	for k, v := range c.Extra {
		meta[k] = clean(k, v, r)
	}
	if c.Role != "" {
		meta["role"] = c.Role
	}
	switch c.Op {
	case OpInsert, OpManual:
		meta["new"] = cleanRow(c.New, r)
	case OpDelete:
		meta["old"] = cleanRow(c.Old, r)
	case OpUpdate:
		meta["changes"] = c.changes(r)
	}
	raw, err := FitMetadata(meta)
	if err != nil {
		return nil, err
	}
	in.Metadata = raw
	return in, nil
}

// changes are the columns that differ between Old and New, each as
// {"old": …, "new": …}. Values are compared before they are redacted, so
// a changed secret shows as changed.
func (c *Change) changes(r *Redactor) map[string]any {
	names := map[string]bool{}
	for k := range c.Old {
		names[k] = true
	}
	for k := range c.New {
		names[k] = true
	}
	out := map[string]any{}
	for k := range names {
		o, n := c.Old[k], c.New[k]
		if !c.Diffed && sameJSON(o, n) {
			continue
		}
		out[k] = map[string]any{"old": clean(k, o, r), "new": clean(k, n, r)}
	}
	return out
}

// sameJSON compares two values as metadata would hold them, so that two
// numbers a double cannot tell apart still differ.
func sameJSON(a, b any) bool {
	ca, errA := canonicalOf(clean("", a, noRedaction))
	cb, errB := canonicalOf(clean("", b, noRedaction))
	return errA == nil && errB == nil && bytes.Equal(ca, cb)
}

func canonicalOf(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return audit.Canonicalize(raw)
}

func cleanRow(row map[string]any, r *Redactor) any {
	if row == nil {
		return nil
	}
	out := make(map[string]any, len(row))
	for k, v := range row {
		out[k] = clean(k, v, r)
	}
	return out
}

// clean returns the value of a member named name as metadata holds it:
// "[redacted]" when the name looks secret; objects with their secret
// members redacted, at any depth; numbers that a double cannot hold
// exactly as strings of their digits (metadata is hashed in RFC 8785 form,
// whose numbers are doubles: 2^53+1 or a long numeric would lose digits).
func clean(name string, v any, r *Redactor) any {
	if name != "" && r.Secret(name) {
		return Redacted
	}
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = clean(k, e, r)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = clean("", e, r)
		}
		return out
	case json.Number:
		if exactDouble(string(x)) {
			return x
		}
		return string(x)
	}
	return v
}

// exactDouble reports whether the JSON number literal s keeps its value
// when written as the shortest double that reads back as it (RFC 8785).
func exactDouble(s string) bool {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return false // out of range
	}
	want, ok1 := new(big.Rat).SetString(s)
	got, ok2 := new(big.Rat).SetString(audit.FormatNumber(f))
	return ok1 && ok2 && want.Cmp(got) == 0
}

// resourceID is the key as text: one column's value as it is (a string
// unquoted, a number as its digits), several as a JSON array, "" when
// there is no key. A secret-looking key column is "[redacted]". A key
// longer than the resource id limit is "sha256:" and its digest.
func (c *Change) resourceID(r *Redactor) string {
	var vals []any
	present := false
	for i, v := range c.Key {
		if i < len(c.KeyColumns) && r.Secret(c.KeyColumns[i]) {
			v = Redacted
		}
		v = clean("", v, r)
		present = present || v != nil
		vals = append(vals, v)
	}
	if !present {
		return ""
	}
	var id string
	if len(vals) == 1 {
		switch x := vals[0].(type) {
		case string:
			id = x
		case json.Number:
			id = string(x)
		default:
			b, _ := canonicalOf(x)
			id = string(b)
		}
	} else {
		b, _ := canonicalOf(vals)
		id = string(b)
	}
	if len(id) > audit.MaxResourceIDLen {
		sum := sha256.Sum256([]byte(id))
		id = "sha256:" + hex.EncodeToString(sum[:])
	}
	return id
}

// FitMetadata encodes meta in canonical form within the event limit
// (audit.MaxMetadataBytes). When it does not fit, the largest values are
// replaced, largest first, by "[omitted: N bytes, sha256:…]" (N and the
// digest of the value's canonical JSON) until it does: first the values of
// columns (members of "new", "old" and of each change), then whole
// top-level members. The result depends only on meta, so a retried change
// maps to the same metadata.
func FitMetadata(meta map[string]any) (json.RawMessage, error) {
	out, err := canonicalOf(meta)
	if err != nil {
		return nil, audit.Errorf(audit.EINVALID, "metadata: %s", audit.ErrorMessage(err))
	}
	if len(out) <= audit.MaxMetadataBytes {
		return out, nil
	}
	type slot struct {
		path string
		raw  []byte
		set  func(any)
	}
	collect := func(members map[string]any, prefix string) []slot {
		var s []slot
		for k, v := range members {
			b, _ := canonicalOf(v)
			s = append(s, slot{prefix + k, b, func(x any) { members[k] = x }})
		}
		return s
	}
	var columns []slot
	for _, name := range []string{"new", "old"} {
		if row, ok := meta[name].(map[string]any); ok {
			columns = append(columns, collect(row, name+".")...)
		}
	}
	if ch, ok := meta["changes"].(map[string]any); ok {
		for col, pair := range ch {
			if p, ok := pair.(map[string]any); ok {
				columns = append(columns, collect(p, "changes."+col+".")...)
			}
		}
	}
	size := len(out)
	shrink := func(slots []slot) {
		sort.Slice(slots, func(i, j int) bool {
			if len(slots[i].raw) != len(slots[j].raw) {
				return len(slots[i].raw) > len(slots[j].raw)
			}
			return slots[i].path < slots[j].path
		})
		for _, s := range slots {
			if size <= audit.MaxMetadataBytes {
				return
			}
			sum := sha256.Sum256(s.raw)
			marker := fmt.Sprintf("[omitted: %d bytes, sha256:%s]", len(s.raw), hex.EncodeToString(sum[:]))
			if len(marker)+2 >= len(s.raw) {
				continue
			}
			s.set(marker)
			size -= len(s.raw) - (len(marker) + 2)
		}
	}
	shrink(columns)
	if size > audit.MaxMetadataBytes {
		shrink(collect(meta, ""))
	}
	if out, err = canonicalOf(meta); err != nil {
		return nil, audit.Errorf(audit.EINVALID, "metadata: %s", audit.ErrorMessage(err))
	}
	return out, nil
}
