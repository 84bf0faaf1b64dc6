package audit

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestParseListQuery(t *testing.T) {
	t.Parallel()
	q, _ := url.ParseQuery("actor_id=u1&actor_type=user&action=user.*&resource_type=doc&resource_id=7&outcome=denied" +
		"&severity=critical&source=billing&since=2026-01-01T00:00:00Z&until=2026-02-01T00:00:00.0000001Z&limit=10&sort=asc&cursor=abc")
	f, cur, err := ParseListQuery(q)
	if err != nil {
		t.Fatal(err)
	}
	want := Filter{ActorID: "u1", ActorType: "user", ActionPrefix: "user.", ResourceType: "doc", ResourceID: "7",
		Outcome: "denied", Severity: "critical", Source: "billing",
		Since: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Until: time.Date(2026, 2, 1, 0, 0, 0, 1000, time.UTC),
		Limit: 10, Asc: true}
	if f != want || cur != "abc" {
		t.Fatalf("got %+v %q\nwant %+v", f, cur, want)
	}
	f, _, err = ParseListQuery(url.Values{})
	if err != nil || f.Limit != DefaultLimit || f.Asc {
		t.Fatalf("defaults: %+v %v", f, err)
	}
	f, _, _ = ParseListQuery(url.Values{"action": {"user.login"}})
	if f.Action != "user.login" || f.ActionPrefix != "" {
		t.Fatalf("exact action: %+v", f)
	}
}

func TestParseListQueryRejects(t *testing.T) {
	t.Parallel()
	cases := []struct{ query, want string }{
		{"colour=red", "colour: unknown query parameter"},
		{"token=abc", "token: unknown query parameter"},
		{"actor_id=a&actor_id=b", "actor_id: given more than once"},
		{"limit=0", "limit: must be an integer from 1 to 1000"},
		{"limit=1001", "limit"},
		{"limit=ten", "limit"},
		{"limit=", "limit"},
		{"sort=up", "sort: must be asc or desc"},
		{"sort=", "sort"},
		{"actor_type=robot", "actor_type: must be one of"},
		{"outcome=ok", "outcome"},
		{"severity=fatal", "severity"},
		{"action=user.%2A.x", "action"},
		{"action=*", "action"},
		{"action=%27%3B+DROP+TABLE+x%3B--", "action"},
		{"since=yesterday", "since: not an RFC 3339 time"},
		{"until=2026-01-01", "until"},
		{"since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", "since: must be before until"},
		{"actor_id=a%00b", "actor_id: contains a NUL byte"},
	}
	for _, c := range cases {
		q, err := url.ParseQuery(c.query)
		if err != nil {
			t.Fatalf("%s: %v", c.query, err)
		}
		_, _, err = ParseListQuery(q)
		if ErrorCode(err) != EINVALID || !strings.Contains(ErrorMessage(err), c.want) {
			t.Errorf("%s: error = %v; want EINVALID containing %q", c.query, err, c.want)
		}
	}
}

func TestParseStatsQuery(t *testing.T) {
	t.Parallel()
	f, iv, err := ParseStatsQuery(url.Values{"interval": {"hour"}, "actor_id": {"u"}})
	if err != nil || iv != Hour || f.ActorID != "u" {
		t.Fatalf("got %+v %s %v", f, iv, err)
	}
	if _, iv, _ := ParseStatsQuery(url.Values{}); iv != Day {
		t.Fatalf("default interval %s", iv)
	}
	for _, q := range []url.Values{{"interval": {"week"}}, {"interval": {""}}, {"limit": {"5"}}, {"cursor": {"x"}}} {
		if _, _, err := ParseStatsQuery(q); ErrorCode(err) != EINVALID {
			t.Errorf("%v accepted: %v", q, err)
		}
	}
}

func TestParseFilterQuery(t *testing.T) {
	t.Parallel()
	f, err := ParseFilterQuery(url.Values{"action": {"user.*"}, "outcome": {"denied"}, "format": {"csv"}}, "format")
	if err != nil || f != (Filter{ActionPrefix: "user.", Outcome: "denied"}) || f.IsZero() {
		t.Fatalf("got %+v %v", f, err)
	}
	if f, err := ParseFilterQuery(url.Values{"format": {"csv"}}, "format", "from_seq"); err != nil || !f.IsZero() {
		t.Fatalf("no filter: %+v %v", f, err)
	}
	for _, c := range []struct{ query, want string }{
		{"limit=5", "limit: unknown query parameter"},
		{"sort=asc", "sort: unknown"},
		{"cursor=x", "cursor: unknown"},
		{"format=csv&format=ndjson", "format: given more than once"},
		{"severity=loud", "severity: must be one of"},
		{"since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", "since: must be before until"},
	} {
		q, _ := url.ParseQuery(c.query)
		if _, err := ParseFilterQuery(q, "format"); ErrorCode(err) != EINVALID || !strings.Contains(ErrorMessage(err), c.want) {
			t.Errorf("%s: error = %v; want EINVALID containing %q", c.query, err, c.want)
		}
	}
}

func TestCursorRoundTripAndTamper(t *testing.T) {
	t.Parallel()
	codec := NewCursorCodec([]byte("secret-one"))
	scope := Scope{AccountID: "primary"}
	f := Filter{ActorID: "u1", Limit: 50}
	last := &Event{ID: uuid.Must(uuid.NewV7()), OccurredAt: time.Date(2026, 5, 6, 7, 8, 9, 123456000, time.UTC)}
	s := codec.Encode(scope, f, last)

	got, err := codec.Decode(scope, Filter{ActorID: "u1", Limit: 10}, s) // page size may change
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != last.ID || !got.OccurredAt.Equal(last.OccurredAt) {
		t.Fatalf("round trip: %+v", got)
	}

	b := []byte(s)
	b[5] ^= 1
	bad := []struct {
		name   string
		codec  *CursorCodec
		scope  Scope
		filter Filter
		cursor string
		want   string
	}{
		{"garbage", codec, scope, f, "not-a-cursor", "malformed"},
		{"flipped", codec, scope, f, string(b), "cursor"},
		{"other key", NewCursorCodec([]byte("secret-two")), scope, f, s, "not issued by this service"},
		{"other filter", codec, scope, Filter{ActorID: "u2"}, s, "other filters"},
		{"other sort", codec, scope, Filter{ActorID: "u1", Asc: true}, s, "other filters"},
		{"other account", codec, Scope{AccountID: "acme"}, f, s, "other filters"},
		{"other actor scope", codec, Scope{AccountID: "primary", ActorID: "u9"}, f, s, "other filters"},
	}
	for _, c := range bad {
		if _, err := c.codec.Decode(c.scope, c.filter, c.cursor); ErrorCode(err) != EINVALID || !strings.Contains(ErrorMessage(err), c.want) {
			t.Errorf("%s: error = %v; want EINVALID containing %q", c.name, err, c.want)
		}
	}
}

func TestClip(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 64, "short"},
		{"abcdef", 3, "abc..."},
		{"ab\u20acd", 3, "ab..."}, // the euro sign's three bytes are not cut
		{"a\xffb", 64, "a\uFFFDb"},
		{"", 3, ""},
	} {
		if got := Clip(c.in, c.n); got != c.want {
			t.Errorf("Clip(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}
