package capture

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"time"
	"unicode"

	"github.com/nself-org/nself-audit/internal/audit"
)

// HasuraEvent is one Hasura event-trigger delivery, decoded.
type HasuraEvent struct {
	// ID is Hasura's event id, the same on every retry of the delivery.
	ID      string
	Trigger string
	Change  *Change
	// IdempotencyKey and Fingerprint make retries of the delivery store the
	// event once: the key is derived from ID in a namespace no client key
	// can reach (clients may not send control characters); the fingerprint
	// is a digest of the payload without delivery_info, which alone changes
	// between retries.
	IdempotencyKey string
	Fingerprint    string
}

// DefaultKeyColumns name the key of a row when the route is not told
// otherwise (?key=).
var DefaultKeyColumns = []string{"id"}

// DecodeHasura reads Hasura's event-trigger payload, as Hasura sends it or
// wrapped as {"payload": {...}}:
//
//	{"id", "created_at", "trigger": {"name"}, "table": {"schema", "name"},
//	 "event": {"op", "data": {"old", "new"}, "session_variables", "trace_context"},
//	 "delivery_info": {"current_retry", "max_retries"}}
//
// Members it knows must have the documented types (EINVALID names the one
// at fault); members it does not know are ignored, since Hasura adds some
// over versions. keyColumns name the row's key (DefaultKeyColumns when
// empty). The change's account is the session's
// x-hasura-source-account-id, else the row's source_account_id, else "".
func DecodeHasura(r io.Reader, keyColumns []string) (*HasuraEvent, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		var appErr *audit.Error
		if errors.As(err, &appErr) {
			return nil, err
		}
		return nil, audit.Errorf(audit.EINVALID, "body: could not be read")
	}
	top, err := members(raw, "body")
	if err != nil {
		return nil, err
	}
	if _, ok := top["event"]; !ok {
		if wrapped, ok := top["payload"]; ok {
			if top, err = members(wrapped, "payload"); err != nil {
				return nil, err
			}
		}
	}
	if len(keyColumns) == 0 {
		keyColumns = DefaultKeyColumns
	}
	ev := &HasuraEvent{}
	c := &Change{Source: "hasura", KeyColumns: keyColumns}
	ev.Change = c

	if ev.ID, err = requiredString(top, "id", "id"); err != nil {
		return nil, err
	}
	if err := audit.CheckText("id", ev.ID, audit.MaxIdempotencyLen-len(hasuraKeyPrefix)); err != nil {
		return nil, err
	}
	if strings.IndexFunc(ev.ID, unicode.IsControl) >= 0 {
		return nil, audit.Errorf(audit.EINVALID, "id: contains a control character")
	}
	if v, ok := top["created_at"]; ok && !isNull(v) {
		var s string
		if json.Unmarshal(v, &s) != nil {
			return nil, audit.Errorf(audit.EINVALID, "created_at: expected a string")
		}
		if c.OccurredAt, err = parseHasuraTime(s); err != nil {
			return nil, err
		}
	}
	if v, ok := top["trigger"]; ok && !isNull(v) {
		trig, err := members(v, "trigger")
		if err != nil {
			return nil, err
		}
		if ev.Trigger, err = optionalString(trig, "name", "trigger.name"); err != nil {
			return nil, err
		}
	}
	table, err := requiredObject(top, "table", "table")
	if err != nil {
		return nil, err
	}
	if c.Schema, err = requiredString(table, "schema", "table.schema"); err != nil {
		return nil, err
	}
	if c.Table, err = requiredString(table, "name", "table.name"); err != nil {
		return nil, err
	}
	event, err := requiredObject(top, "event", "event")
	if err != nil {
		return nil, err
	}
	if c.Op, err = requiredString(event, "op", "event.op"); err != nil {
		return nil, err
	}
	switch c.Op {
	case OpInsert, OpUpdate, OpDelete, OpManual:
	default:
		return nil, audit.Errorf(audit.EINVALID, "event.op: must be INSERT, UPDATE, DELETE or MANUAL")
	}
	// The plugin's own tables are refused: an event trigger on them would
	// feed every recorded event back into the log.
	if err := CheckTable(c.Schema, c.Table); err != nil {
		return nil, err
	}
	if _, err := Action(c.Schema, c.Table, c.Op); err != nil {
		return nil, err
	}
	data, err := requiredObject(event, "data", "event.data")
	if err != nil {
		return nil, err
	}
	if c.Old, err = row(data, "old"); err != nil {
		return nil, err
	}
	if c.New, err = row(data, "new"); err != nil {
		return nil, err
	}
	need := map[string][2]bool{OpInsert: {false, true}, OpUpdate: {true, true}, OpDelete: {true, false}, OpManual: {false, true}}[c.Op]
	if need[0] && c.Old == nil {
		return nil, audit.Errorf(audit.EINVALID, "event.data.old: required for %s", c.Op)
	}
	if need[1] && c.New == nil {
		return nil, audit.Errorf(audit.EINVALID, "event.data.new: required for %s", c.Op)
	}
	session, err := sessionVariables(event)
	if err != nil {
		return nil, err
	}
	c.ActorID = session["x-hasura-user-id"]
	c.Role = session["x-hasura-role"]
	c.Account = session["x-hasura-source-account-id"]
	if c.Account == "" {
		for _, r := range []map[string]any{c.New, c.Old} {
			if s, ok := r["source_account_id"].(string); ok && s != "" {
				c.Account = s
				break
			}
		}
	}
	if c.RequestID, err = traceID(event); err != nil {
		return nil, err
	}
	keyRow := c.New
	if keyRow == nil {
		keyRow = c.Old
	}
	for _, k := range keyColumns {
		c.Key = append(c.Key, keyRow[k])
	}
	c.Extra = map[string]any{"hasura_event_id": ev.ID}
	if ev.Trigger != "" {
		c.Extra["trigger"] = ev.Trigger
	}

	// The fingerprint covers what Hasura stored for the event, not the
	// delivery: retries differ only in delivery_info.
	delete(top, "delivery_info")
	printable, err := json.Marshal(top)
	if err == nil {
		printable, err = audit.Canonicalize(printable)
	}
	if err != nil {
		return nil, audit.Errorf(audit.EINVALID, "body: %s", audit.ErrorMessage(err))
	}
	sum := sha256.Sum256(printable)
	ev.Fingerprint = "hasura " + hex.EncodeToString(sum[:])
	ev.IdempotencyKey = hasuraKeyPrefix + ev.ID
	return ev, nil
}

// hasuraKeyPrefix puts Hasura's event ids in a namespace of idempotency
// keys of their own (a client's key cannot hold \x1f).
const hasuraKeyPrefix = "hasura\x1f"

// members decodes a JSON object into its members, refusing anything else
// and a member given twice (of which encoding/json would keep the last).
func members(raw []byte, what string) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, audit.Errorf(audit.EINVALID, "%s: empty; expected a JSON object", what)
		}
		return nil, audit.Errorf(audit.EINVALID, "%s: malformed JSON", what)
	}
	if tok != json.Delim('{') {
		return nil, audit.Errorf(audit.EINVALID, "%s: expected a JSON object", what)
	}
	out := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, audit.Errorf(audit.EINVALID, "%s: malformed JSON", what)
		}
		name, _ := tok.(string)
		if _, dup := out[name]; dup {
			return nil, audit.Errorf(audit.EINVALID, "%s.%s: given more than once", what, audit.Clip(name, 64))
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, audit.Errorf(audit.EINVALID, "%s: malformed JSON", what)
		}
		out[name] = v
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, audit.Errorf(audit.EINVALID, "%s: malformed JSON", what)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, audit.Errorf(audit.EINVALID, "%s: unexpected data after the JSON object", what)
	}
	return out, nil
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

func requiredObject(m map[string]json.RawMessage, name, path string) (map[string]json.RawMessage, error) {
	v, ok := m[name]
	if !ok || isNull(v) {
		return nil, audit.Errorf(audit.EINVALID, "%s: required", path)
	}
	return members(v, path)
}

func requiredString(m map[string]json.RawMessage, name, path string) (string, error) {
	s, err := optionalString(m, name, path)
	if err == nil && s == "" {
		err = audit.Errorf(audit.EINVALID, "%s: required", path)
	}
	return s, err
}

func optionalString(m map[string]json.RawMessage, name, path string) (string, error) {
	v, ok := m[name]
	if !ok || isNull(v) {
		return "", nil
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return "", audit.Errorf(audit.EINVALID, "%s: expected a string", path)
	}
	if err := audit.CheckText(path, s, 1024); err != nil {
		return "", err
	}
	return s, nil
}

// row decodes event.data.old or .new: an object of column values, or
// null. Numbers keep their digits (json.Number).
func row(data map[string]json.RawMessage, name string) (map[string]any, error) {
	v, ok := data[name]
	if !ok || isNull(v) {
		return nil, nil
	}
	if _, err := members(v, "event.data."+name); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	var out map[string]any
	if err := dec.Decode(&out); err != nil {
		return nil, audit.Errorf(audit.EINVALID, "event.data.%s: malformed JSON", name)
	}
	return out, nil
}

// sessionVariables returns event.session_variables with lowercased names
// (Hasura's are case-insensitive); null or absent is none, as with the
// admin secret.
func sessionVariables(event map[string]json.RawMessage) (map[string]string, error) {
	out := map[string]string{}
	v, ok := event["session_variables"]
	if !ok || isNull(v) {
		return out, nil
	}
	vars, err := members(v, "event.session_variables")
	if err != nil {
		return nil, err
	}
	for name, raw := range vars {
		if isNull(raw) {
			continue
		}
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, audit.Errorf(audit.EINVALID, "event.session_variables.%s: expected a string", audit.Clip(name, 64))
		}
		out[strings.ToLower(name)] = s
	}
	return out, nil
}

// traceID is event.trace_context.trace_id, a string or (older Hasura) a
// number, or "".
func traceID(event map[string]json.RawMessage) (string, error) {
	v, ok := event["trace_context"]
	if !ok || isNull(v) {
		return "", nil
	}
	tc, err := members(v, "event.trace_context")
	if err != nil {
		return "", err
	}
	id, ok := tc["trace_id"]
	if !ok || isNull(id) {
		return "", nil
	}
	var s string
	if json.Unmarshal(id, &s) == nil {
		return s, nil
	}
	var n json.Number
	dec := json.NewDecoder(bytes.NewReader(id))
	dec.UseNumber()
	if dec.Decode(&n) == nil {
		return n.String(), nil
	}
	return "", audit.Errorf(audit.EINVALID, "event.trace_context.trace_id: expected a string or a number")
}

// parseHasuraTime reads created_at: RFC 3339, or without a zone (Hasura's
// event log column is a timestamp without time zone, in UTC).
func parseHasuraTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation("2006-01-02T15:04:05.999999999", s, time.UTC); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation("2006-01-02 15:04:05.999999999", s, time.UTC); err == nil {
		return t, nil
	}
	return time.Time{}, audit.Errorf(audit.EINVALID, "created_at: not a time such as 2026-01-02T15:04:05.123456Z")
}
