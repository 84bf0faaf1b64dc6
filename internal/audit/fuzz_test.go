package audit

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// The fuzz targets below run their seeds (f.Add and testdata/fuzz) as
// ordinary tests in every `go test`; scripts/fuzz.sh runs them with -fuzz.
// Each states what must hold for any input, not just for the seeds.

// fuzzNow is the server clock of the fuzz targets: fixed, so that a failing
// input fails again.
var fuzzNow = time.Date(2026, 6, 1, 12, 0, 0, 123456789, time.UTC)

// mustBeInvalid fails unless err is an EINVALID *Error with a message that
// is valid UTF-8 of bounded size: a client-safe 400, not a 500.
func mustBeInvalid(t *testing.T, what string, err error) {
	t.Helper()
	if ErrorCode(err) != EINVALID {
		t.Fatalf("%s: error %v (%T) is %s, want %s", what, err, err, ErrorCode(err), EINVALID)
	}
	if msg := ErrorMessage(err); msg == "" || !utf8.ValidString(msg) || len(msg) > 1024 {
		t.Fatalf("%s: error message %q is empty, not UTF-8 or too long", what, msg)
	}
}

// FuzzDecodeEventInput: any body is either refused with an EINVALID error
// or becomes an event whose every field meets the documented limits, whose
// metadata is canonical, and which survives the export format: encoded as
// the API writes it and decoded as `nself-audit verify` reads it, it has
// the same canonical encoding and hash.
func FuzzDecodeEventInput(f *testing.F) {
	f.Add([]byte(`{"actor_id":"u1","action":"user.login"}`))
	f.Add([]byte(`{"actor_type":"system","action":"a.b","metadata":{"z":[1,2.5e3,"x"],"a":null},"occurred_at":"2026-05-01T00:00:00.1234567Z","ip_address":"::ffff:10.0.0.1"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		in, err := DecodeEventInput(bytes.NewReader(body))
		if err != nil {
			mustBeInvalid(t, "decode", err)
			return
		}
		e, err := in.Validate("acme", "plugin-x", fuzzNow)
		if err != nil {
			mustBeInvalid(t, "validate", err)
			return
		}
		texts := map[string]struct {
			v   string
			max int
		}{
			"actor_id": {e.ActorID, MaxActorIDLen}, "action": {e.Action, MaxActionLen}, "resource_type": {e.ResourceType, MaxResourceTypeLen},
			"resource_id": {e.ResourceID, MaxResourceIDLen}, "user_agent": {e.UserAgent, MaxUserAgentLen},
			"request_id": {e.RequestID, MaxRequestIDLen}, "source": {e.Source, MaxSourceLen},
		}
		for name, f := range texts {
			if len(f.v) > f.max || !utf8.ValidString(f.v) || strings.IndexByte(f.v, 0) >= 0 {
				t.Fatalf("%s %q passed validation", name, f.v)
			}
		}
		switch {
		case !ValidAction(e.Action):
			t.Fatalf("action %q passed validation", e.Action)
		case !oneOf(e.ActorType, ActorTypes) || !oneOf(e.Outcome, Outcomes) || !oneOf(e.Severity, Severities):
			t.Fatalf("enum passed validation: %q %q %q", e.ActorType, e.Outcome, e.Severity)
		case e.OccurredAt.After(fuzzNow.Add(MaxFutureSkew)) || e.OccurredAt.Year() < 1970:
			t.Fatalf("occurred_at %v passed validation", e.OccurredAt)
		case !e.OccurredAt.Equal(e.OccurredAt.Truncate(time.Microsecond)):
			t.Fatalf("occurred_at %v not truncated to microseconds", e.OccurredAt)
		case len(e.Metadata) > MaxMetadataBytes:
			t.Fatalf("metadata of %d bytes passed validation", len(e.Metadata))
		}
		again, err := Canonicalize(e.Metadata)
		if err != nil || !bytes.Equal(again, e.Metadata) {
			t.Fatalf("metadata %s is not canonical: %s %v", e.Metadata, again, err)
		}
		// The export round trip keeps the hash.
		if err := Link(e, 41, GenesisHash); err != nil {
			t.Fatal(err)
		}
		line, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("encode event: %v", err)
		}
		back, err := DecodeEvent(line)
		if err != nil {
			t.Fatalf("an accepted event does not read back (%v): %s", err, line)
		}
		if !bytes.Equal(Canonical(back), Canonical(e)) {
			t.Fatalf("canonical encoding changed through the export:\n%s\n%s", Canonical(e), Canonical(back))
		}
		if err := NewChainVerifierAt(41, GenesisHash).Check(back); err != nil {
			t.Fatalf("exported event does not verify: %v", err)
		}
	})
}

// FuzzDecodeBatch: any batch body is refused with an EINVALID error or
// holds 1 to MaxBatch events, none with its own idempotency key.
func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte(`{"events":[{"actor_id":"u1","action":"a.b"},{"actor_type":"system","action":"c.d"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ins, err := DecodeBatch(bytes.NewReader(body))
		if err != nil {
			mustBeInvalid(t, "decode batch", err)
			return
		}
		if len(ins) < 1 || len(ins) > MaxBatch {
			t.Fatalf("batch of %d events accepted", len(ins))
		}
		for i, in := range ins {
			if in == nil || in.IdempotencyKey != "" {
				t.Fatalf("events[%d]: %+v accepted", i, in)
			}
		}
	})
}

// FuzzParseListQuery: any query string is refused with an EINVALID error or
// becomes a filter within the documented bounds, and a cursor issued for
// that filter decodes back, for that filter only.
func FuzzParseListQuery(f *testing.F) {
	f.Add("actor_id=u1&action=user.*&since=2026-01-01T00:00:00Z&until=2026-02-01T00:00:00.0000001Z&limit=10&sort=asc")
	f.Add("resource_id=x%27%3B%20DROP%20TABLE%20np_nself_audit.np_audit_events%3B--&severity=critical")
	codec := NewCursorCodec([]byte("fuzz cursor key"))
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return // the HTTP server answers a malformed query itself
		}
		if _, _, err := ParseStatsQuery(q); err != nil {
			mustBeInvalid(t, "stats query", err)
		}
		flt, _, err := ParseListQuery(q)
		if err != nil {
			mustBeInvalid(t, "list query", err)
			return
		}
		switch {
		case flt.Limit < 1 || flt.Limit > MaxLimit:
			t.Fatalf("limit %d accepted", flt.Limit)
		case !flt.Since.IsZero() && !flt.Until.IsZero() && !flt.Since.Before(flt.Until):
			t.Fatalf("since %v not before until %v", flt.Since, flt.Until)
		case flt.Action != "" && flt.ActionPrefix != "":
			t.Fatalf("both an action and a prefix: %+v", flt)
		case flt.ActionPrefix != "" && !ValidAction(strings.TrimSuffix(flt.ActionPrefix, ".")):
			t.Fatalf("action prefix %q accepted", flt.ActionPrefix)
		}
		for _, v := range []string{flt.ActorID, flt.ResourceType, flt.ResourceID, flt.Source} {
			if strings.IndexByte(v, 0) >= 0 || !utf8.ValidString(v) || len(v) > 1024 {
				t.Fatalf("filter value %q accepted", v)
			}
		}
		scope := Scope{AccountID: "acme"}
		last := &Event{ID: uuid.MustParse("01900000-0000-7000-8000-000000000001"), OccurredAt: fuzzNow.Truncate(time.Microsecond)}
		cur := codec.Encode(scope, flt, last)
		got, err := codec.Decode(scope, flt, cur)
		if err != nil || got.ID != last.ID || !got.OccurredAt.Equal(last.OccurredAt) {
			t.Fatalf("cursor round trip: %+v %v", got, err)
		}
		other := flt
		other.Asc = !other.Asc
		if _, err := codec.Decode(scope, other, cur); err == nil {
			t.Fatal("a cursor decoded for another sort order")
		}
		if _, err := codec.Decode(Scope{AccountID: "acme", ActorID: "u1"}, flt, cur); err == nil {
			t.Fatal("a cursor decoded for another scope")
		}
	})
}

// FuzzCursorDecode: a cursor string a client sends is refused with an
// EINVALID error unless this codec issued it for this very query; the
// only strings that decode are the seeds that were issued.
func FuzzCursorDecode(f *testing.F) {
	codec := NewCursorCodec([]byte("fuzz cursor key"))
	scope, flt := Scope{AccountID: "acme"}, Filter{ActorID: "u1", Limit: 50}
	issued := codec.Encode(scope, flt, &Event{ID: uuid.MustParse("01900000-0000-7000-8000-000000000002"), OccurredAt: fuzzNow.Truncate(time.Microsecond)})
	f.Add(issued)
	f.Add(strings.Repeat("A", 55))
	f.Fuzz(func(t *testing.T, s string) {
		c, err := codec.Decode(scope, flt, s)
		if err != nil {
			mustBeInvalid(t, "cursor", err)
			return
		}
		// Accepted: it must carry the very bytes of the one cursor issued
		// (base64 may spell them in more than one way); anything else
		// would be a forgery, which needs the HMAC key.
		got, err1 := base64.RawURLEncoding.DecodeString(s)
		want, err2 := base64.RawURLEncoding.DecodeString(issued)
		if err1 != nil || err2 != nil || !bytes.Equal(got, want) {
			t.Fatalf("cursor %q accepted but never issued", s)
		}
		if c.ID != uuid.MustParse("01900000-0000-7000-8000-000000000002") || !c.OccurredAt.Equal(fuzzNow.Truncate(time.Microsecond)) {
			t.Fatalf("issued cursor decodes to %+v", c)
		}
	})
}

// FuzzCanonicalize: RFC 8785 canonicalization of any JSON value is
// idempotent, yields valid JSON that means the same as the input, and
// refuses what it cannot represent with an EINVALID error.
func FuzzCanonicalize(f *testing.F) {
	for _, s := range []string{
		`{"b":1,"a":[true,false,null,"\u00e9\ud83d\ude00"],"€":1e21,"":-0.0}`,
		`[1.0, 1e-7, 123456789012345678901234567890, "\t\u2028"]`,
		`{"a":{"a":{"a":{}}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		out, err := Canonicalize(raw)
		if err != nil {
			mustBeInvalid(t, "canonicalize", err)
			return
		}
		if !json.Valid(out) || !utf8.Valid(out) {
			t.Fatalf("canonical form is not valid JSON: %q", out)
		}
		again, err := Canonicalize(out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q -> %q (%v)", out, again, err)
		}
		var a, b any
		if err := json.Unmarshal(raw, &a); err != nil {
			t.Fatalf("canonicalized %q, which encoding/json refuses: %v", raw, err)
		}
		if err := json.Unmarshal(out, &b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("meaning changed: %q -> %q", raw, out)
		}
	})
}

// FuzzCanonicalEvent: the canonical encoding of any event (the bytes its
// hash covers) is valid JSON that holds each field's value, and the hash
// is a function of those bytes and prev_hash alone.
func FuzzCanonicalEvent(f *testing.F) {
	f.Add("u1", "user.login", "doc", "d\"1\\", "Mozilla/5.0 \u2028", "req-1", "files", int64(1), int64(1767225600123456))
	f.Fuzz(func(t *testing.T, actor, action, resType, resID, agent, reqID, source string, seq, micros int64) {
		for _, s := range []string{actor, action, resType, resID, agent, reqID, source} {
			if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
				return // validation refuses these before anything is encoded
			}
		}
		seq &= 1<<53 - 1 // seqs stay far below 2^53, where JSON numbers are exact
		e := &Event{
			ID: uuid.MustParse("01900000-0000-7000-8000-000000000003"), SourceAccountID: "acme", Seq: seq,
			OccurredAt: time.UnixMicro(micros % 253402300799000000).UTC(), RecordedAt: fuzzNow.Truncate(time.Microsecond),
			ActorID: actor, ActorType: "user", Action: action, ResourceType: resType, ResourceID: resID,
			Outcome: "success", Severity: "info", UserAgent: agent, RequestID: reqID, Source: source,
			Metadata: CanonicalJSON(`{"k":[1,"v"]}`),
		}
		c := Canonical(e)
		var m map[string]any
		if err := json.Unmarshal(c, &m); err != nil {
			t.Fatalf("canonical encoding is not JSON (%v): %q", err, c)
		}
		for name, want := range map[string]string{"actor_id": actor, "action": action, "resource_type": resType,
			"resource_id": resID, "user_agent": agent, "request_id": reqID, "source": source,
			"occurred_at": FormatTime(e.OccurredAt)} {
			if m[name] != want {
				t.Fatalf("%s: canonical holds %q, want %q", name, m[name], want)
			}
		}
		if again, err := Canonicalize(c); err != nil || !bytes.Equal(again, c) {
			t.Fatalf("canonical encoding is not in RFC 8785 form: %q vs %q (%v)", c, again, err)
		}
		h1, err1 := ComputeHash(GenesisHash, e)
		copied := *e
		h2, err2 := ComputeHash(GenesisHash, &copied)
		if err1 != nil || err2 != nil || h1 != h2 || len(h1) != 64 {
			t.Fatalf("hash not deterministic: %s %s %v %v", h1, h2, err1, err2)
		}
	})
}
