package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// EventInput is what a client sends to record an event. Fields the server
// assigns (id, seq, recorded_at, hashes, account) are not part of it.
type EventInput struct {
	OccurredAt     *string         `json:"occurred_at"`
	ActorID        string          `json:"actor_id"`
	ActorType      string          `json:"actor_type"`
	Action         string          `json:"action"`
	ResourceType   string          `json:"resource_type"`
	ResourceID     string          `json:"resource_id"`
	Outcome        string          `json:"outcome"`
	Severity       string          `json:"severity"`
	IPAddress      string          `json:"ip_address"`
	UserAgent      string          `json:"user_agent"`
	RequestID      string          `json:"request_id"`
	Source         string          `json:"source"`
	Metadata       json.RawMessage `json:"metadata"`
	IdempotencyKey string          `json:"idempotency_key"`
}

// serverFields are event fields a client may not set, with the reason given
// back when it tries.
var serverFields = map[string]string{
	"id":                "id is assigned by the server",
	"seq":               "seq is assigned by the server",
	"recorded_at":       "recorded_at is assigned by the server",
	"prev_hash":         "prev_hash is assigned by the server",
	"hash":              "hash is assigned by the server",
	"source_account_id": "source_account_id comes from the credentials and the X-Source-Account-Id header, not the body",
}

// DecodeEventInput decodes one event from JSON, strictly: unknown fields,
// wrong types, trailing data and NUL bytes are EINVALID errors that name the
// field.
func DecodeEventInput(r io.Reader) (*EventInput, error) {
	return decodeBody(r, decodeEventFast, decodeEventStrict)
}

// decodeBody reads a body whole and decodes it with fast, a one-pass
// decoder of its plainest form, or, when fast declines, with strict
// (encoding/json), which names what is wrong.
func decodeBody[T any](r io.Reader, fast func([]byte) (T, bool), strict func(io.Reader) (T, error)) (T, error) {
	body, err := io.ReadAll(r)
	if err != nil {
		// The size limit, or a broken body: decode what was read, then the
		// error, as the reader gave them.
		return strict(io.MultiReader(bytes.NewReader(body), errReader{err}))
	}
	if v, ok := fast(body); ok {
		return v, nil
	}
	return strict(bytes.NewReader(body))
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// decodeEventStrict is DecodeEventInput through encoding/json, which
// names what is wrong with a body.
func decodeEventStrict(r io.Reader) (*EventInput, error) {
	dec := json.NewDecoder(r)
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, Errorf(EINVALID, "body: unexpected data after the JSON object")
	}
	return decodeEventValue(raw)
}

// decodeEventValue is DecodeEventInput for one JSON value already read and
// checked for syntax (by a json.Decoder): the events of a batch.
func decodeEventValue(raw json.RawMessage) (*EventInput, error) {
	if in, ok := decodeEventFast(raw); ok {
		return in, nil
	}
	if err := checkMemberNames(raw, inputFields, func(name string) bool { return serverFields[name] != "" }); err != nil {
		return nil, err
	}
	strict := json.NewDecoder(bytes.NewReader(raw))
	strict.DisallowUnknownFields()
	var in EventInput
	if err := strict.Decode(&in); err != nil {
		return nil, jsonError(err)
	}
	return &in, nil
}

// inputFields are the member names of EventInput, spelled exactly.
var inputFields = map[string]bool{
	"occurred_at": true, "actor_id": true, "actor_type": true, "action": true, "resource_type": true,
	"resource_id": true, "outcome": true, "severity": true, "ip_address": true, "user_agent": true,
	"request_id": true, "source": true, "metadata": true, "idempotency_key": true,
}

// checkMemberNames refuses what encoding/json would quietly accept in an
// object: a member named in another letter case ("Action") and a member
// given twice, of which only the last would count. Names outside allowed
// are refused too, unless tolerated (they then meet the typed decoder,
// which says why).
func checkMemberNames(raw json.RawMessage, allowed map[string]bool, tolerated func(string) bool) error {
	var seen []string // a handful of members: a slice beats a map
	var err error
	eachMember(raw, func(name string) bool {
		for _, n := range seen {
			if n == name {
				err = Errorf(EINVALID, "%s: given more than once", Clip(name, 64))
				return false
			}
		}
		if !allowed[name] && (tolerated == nil || !tolerated(name)) {
			err = Errorf(EINVALID, "%s: unknown field", Clip(name, 64))
			return false
		}
		seen = append(seen, name)
		return true
	})
	return err
}

// eachMember calls fn with the name of each member of the JSON object raw,
// in order, until fn returns false. raw must be valid JSON (as a
// json.Decoder returned it); if it is not an object, fn is not called.
// It scans the bytes once instead of tokenizing them: this runs for every
// event received.
func eachMember(raw []byte, fn func(name string) bool) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return
	}
	i++
	for {
		i = skipSpace(raw, i)
		if i >= len(raw) || raw[i] == '}' {
			return
		}
		if raw[i] == ',' {
			i = skipSpace(raw, i+1)
		}
		end := stringEnd(raw, i)
		if end < 0 {
			return
		}
		if !fn(memberName(raw[i:end])) {
			return
		}
		i = skipSpace(raw, end)
		if i >= len(raw) || raw[i] != ':' {
			return
		}
		i = skipValue(raw, skipSpace(raw, i+1))
		if i < 0 {
			return
		}
	}
}

// memberName decodes a quoted JSON string as encoding/json does (invalid
// UTF-8 becomes U+FFFD).
func memberName(quoted []byte) string {
	if bytes.IndexByte(quoted, '\\') < 0 && utf8.Valid(quoted) {
		return string(quoted[1 : len(quoted)-1])
	}
	var s string
	if err := json.Unmarshal(quoted, &s); err != nil {
		return string(quoted)
	}
	return s
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index after the string that starts at b[i], or -1.
func stringEnd(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index after the value that starts at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = stringEnd(b, i)
				if i < 0 {
					return -1
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	}
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
		i++
	}
	return i
}

// jsonError turns an encoding/json error into a client-safe EINVALID error.
func jsonError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var appErr *Error
	switch {
	case errors.As(err, &appErr): // e.g. the reader's size limit
		return err
	case errors.Is(err, io.EOF):
		return Errorf(EINVALID, "body: empty; expected a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return Errorf(EINVALID, "body: truncated JSON")
	case errors.As(err, &syn):
		return Errorf(EINVALID, "body: malformed JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return Errorf(EINVALID, "body: expected a JSON object, got %s", typ.Value)
		}
		return Errorf(EINVALID, "%s: expected %s, got %s", typ.Field, jsonTypeName(typ.Type.Kind().String()), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		if why, ok := serverFields[name]; ok {
			return Errorf(EINVALID, "%s: %s", name, why)
		}
		return Errorf(EINVALID, "%s: unknown field", name)
	}
	return Errorf(EINVALID, "body: %s", strings.TrimPrefix(err.Error(), "json: "))
}

func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	case "bool":
		return "a boolean"
	}
	return "a " + kind
}

// ValidAccountID reports whether s is an acceptable source_account_id:
// 1 to 128 of A-Z a-z 0-9 _ . : @ - (the pattern ^[A-Za-z0-9_.:@-]{1,128}$,
// checked byte by byte: it runs on every request; TestValidPatterns holds
// it to the pattern).
func ValidAccountID(s string) bool {
	if len(s) < 1 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !wordByte(c) && c != '.' && c != ':' && c != '@' {
			return false
		}
	}
	return true
}

// ValidAction reports whether s is an action in dot notation (user.login):
// at most MaxActionLen bytes of segments of A-Z a-z 0-9 _ - joined by dots
// (the pattern ^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$, byte by byte).
func ValidAction(s string) bool {
	if len(s) == 0 || len(s) > MaxActionLen {
		return false
	}
	segment := 0 // bytes in the current segment
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case wordByte(c):
			segment++
		case c == '.' && segment > 0:
			segment = 0
		default:
			return false
		}
	}
	return segment > 0
}

// wordByte reports whether c is one of A-Z a-z 0-9 _ -.
func wordByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// Validate checks the input and returns the event it describes, with defaults
// applied, an id assigned and times truncated to microseconds. account is
// the caller's account; source is the X-Source-Plugin header, used when the
// body names no source. now is the server's clock.
func (in *EventInput) Validate(account, source string, now time.Time) (*Event, error) {
	e := &Event{
		SourceAccountID: account,
		ActorID:         in.ActorID,
		ActorType:       orDefault(in.ActorType, "user"),
		Action:          in.Action,
		ResourceType:    in.ResourceType,
		ResourceID:      in.ResourceID,
		Outcome:         orDefault(in.Outcome, "success"),
		Severity:        orDefault(in.Severity, "info"),
		UserAgent:       in.UserAgent,
		RequestID:       in.RequestID,
		Source:          orDefault(in.Source, source),
	}
	texts := []struct {
		name, value string
		max         int
	}{
		{"actor_id", e.ActorID, MaxActorIDLen},
		{"action", e.Action, MaxActionLen},
		{"resource_type", e.ResourceType, MaxResourceTypeLen},
		{"resource_id", e.ResourceID, MaxResourceIDLen},
		{"user_agent", e.UserAgent, MaxUserAgentLen},
		{"request_id", e.RequestID, MaxRequestIDLen},
		{"source", e.Source, MaxSourceLen},
		{"idempotency_key", in.IdempotencyKey, MaxIdempotencyLen},
	}
	for _, f := range texts {
		if err := CheckText(f.name, f.value, f.max); err != nil {
			return nil, err
		}
	}
	if strings.IndexFunc(in.IdempotencyKey, unicode.IsControl) >= 0 {
		return nil, Errorf(EINVALID, "idempotency_key: contains a control character")
	}
	if !ValidAccountID(account) {
		return nil, Errorf(EINVALID, "source_account_id: must be 1 to 128 characters of A-Z a-z 0-9 _ . : @ -")
	}
	switch {
	case e.Action == "":
		return nil, Errorf(EINVALID, "action: required")
	case !ValidAction(e.Action):
		return nil, Errorf(EINVALID, "action: must be dot notation such as user.login (letters, digits, _ and - between dots)")
	case !oneOf(e.ActorType, ActorTypes):
		return nil, Errorf(EINVALID, "actor_type: must be one of %s", strings.Join(ActorTypes, ", "))
	case !oneOf(e.Outcome, Outcomes):
		return nil, Errorf(EINVALID, "outcome: must be one of %s", strings.Join(Outcomes, ", "))
	case !oneOf(e.Severity, Severities):
		return nil, Errorf(EINVALID, "severity: must be one of %s", strings.Join(Severities, ", "))
	case e.ActorID == "" && e.ActorType != "system":
		return nil, Errorf(EINVALID, "actor_id: required unless actor_type is system")
	}
	if in.IPAddress != "" {
		addr, err := netip.ParseAddr(in.IPAddress)
		if err != nil || addr.Zone() != "" {
			return nil, Errorf(EINVALID, "ip_address: not an IPv4 or IPv6 address")
		}
		e.IPAddress = addr.Unmap().String()
	}
	now = truncTime(now)
	e.OccurredAt = now
	if in.OccurredAt != nil {
		t, err := time.Parse(time.RFC3339Nano, *in.OccurredAt)
		if err != nil {
			return nil, Errorf(EINVALID, "occurred_at: not an RFC 3339 time such as 2026-01-02T15:04:05Z")
		}
		if y := t.UTC().Year(); y < 1970 || y > 9999 {
			return nil, Errorf(EINVALID, "occurred_at: year must be between 1970 and 9999")
		}
		if t.After(now.Add(MaxFutureSkew)) {
			return nil, Errorf(EINVALID, "occurred_at: more than 24 hours in the future")
		}
		e.OccurredAt = truncTime(t)
	}
	meta, err := CanonicalizeMetadata(in.Metadata)
	if err != nil {
		return nil, err
	}
	e.Metadata = meta
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("new event id: %w", err)
	}
	e.ID = id
	e.RecordedAt = now
	return e, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// CheckText checks a text value named name: at most max bytes, valid
// UTF-8, no NUL byte (PostgreSQL text cannot hold one).
func CheckText(name, v string, max int) error {
	switch {
	case len(v) > max:
		return Errorf(EINVALID, "%s: longer than %d bytes", name, max)
	case strings.IndexByte(v, 0) >= 0:
		return Errorf(EINVALID, "%s: contains a NUL byte", name)
	case !utf8.ValidString(v):
		return Errorf(EINVALID, "%s: not valid UTF-8", name)
	}
	return nil
}

// Fingerprint is a digest of what a client asked to record, used to tell a
// genuine retry of an idempotency key from a reuse of it for another event.
// It covers every input field except the server-assigned ones and, when
// the client gave none, occurred_at (a retry would default it anew).
func (in *EventInput) Fingerprint(e *Event) string {
	occurred := ""
	if in.OccurredAt != nil {
		occurred = FormatTime(e.OccurredAt)
	}
	b := make([]byte, 0, 512+len(e.Metadata))
	for _, s := range []string{occurred, e.ActorID, e.ActorType, e.Action, e.ResourceType, e.ResourceID,
		e.Outcome, e.Severity, e.IPAddress, e.UserAgent, e.RequestID, e.Source, string(e.Metadata)} {
		b = strconv.AppendInt(b, int64(len(s)), 10) // "<length>:<text>;"
		b = append(append(append(b, ':'), s...), ';')
	}
	return sha256Hex(b)
}

// MaxBatch is how many events one batch request may hold.
const MaxBatch = 1000

// DecodeBatch decodes {"events":[...]} with 1 to MaxBatch events, each as
// strictly as DecodeEventInput; an error names the index of the event at
// fault.
func DecodeBatch(r io.Reader) ([]*EventInput, error) {
	return decodeBody(r, decodeBatchFast, decodeBatchStrict)
}

// decodeBatchStrict is DecodeBatch through encoding/json, which names what
// is wrong with a body.
func decodeBatchStrict(r io.Reader) ([]*EventInput, error) {
	dec := json.NewDecoder(r)
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, Errorf(EINVALID, "body: unexpected data after the JSON object")
	}
	if err := checkMemberNames(raw, map[string]bool{"events": true}, nil); err != nil {
		return nil, err
	}
	var body struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, jsonError(err)
	}
	switch n := len(body.Events); {
	case body.Events == nil:
		return nil, Errorf(EINVALID, "events: required, an array of 1 to %d events", MaxBatch)
	case n == 0 || n > MaxBatch:
		return nil, Errorf(EINVALID, "events: holds %d events; send 1 to %d", n, MaxBatch)
	}
	ins := make([]*EventInput, len(body.Events))
	for i, raw := range body.Events {
		in, err := decodeEventValue(raw)
		if err != nil {
			return nil, Errorf(EINVALID, "events[%d]: %s", i, strings.TrimPrefix(ErrorMessage(err), "body: "))
		}
		if in.IdempotencyKey != "" {
			return nil, Errorf(EINVALID, "events[%d]: idempotency_key: a batch takes one Idempotency-Key header for all its events", i)
		}
		ins[i] = in
	}
	return ins, nil
}

// eventFields are the member names of an exported event, spelled exactly.
var eventFields = map[string]bool{
	"id": true, "source_account_id": true, "seq": true, "occurred_at": true, "recorded_at": true,
	"actor_id": true, "actor_type": true, "action": true, "resource_type": true, "resource_id": true,
	"outcome": true, "severity": true, "ip_address": true, "user_agent": true, "request_id": true,
	"source": true, "metadata": true, "prev_hash": true, "hash": true,
}

// DecodeEvent decodes one stored event as the API and the export write it,
// strictly: every member spelled exactly, once, and none unknown, so that
// what is verified is what any other JSON reader sees.
func DecodeEvent(raw []byte) (*Event, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, Errorf(EINVALID, "not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, Errorf(EINVALID, "malformed JSON")
		}
		name, _ := tok.(string)
		switch {
		case seen[name]:
			return nil, Errorf(EINVALID, "%s: given more than once", Clip(name, 64))
		case !eventFields[name]:
			return nil, Errorf(EINVALID, "%s: unknown field", Clip(name, 64))
		}
		seen[name] = true
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, Errorf(EINVALID, "malformed JSON")
		}
		if string(value) == "null" {
			return nil, Errorf(EINVALID, "%s: null; every member of an event has a value", name)
		}
	}
	for name := range eventFields {
		if !seen[name] {
			return nil, Errorf(EINVALID, "%s: missing", name)
		}
	}
	var e Event
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, jsonError(err)
	}
	return &e, nil
}
