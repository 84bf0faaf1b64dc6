package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 27, 12, 0, 0, 123456789, time.UTC)

func validate(body string) (*Event, error) {
	in, err := DecodeEventInput(strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	return in.Validate("primary", "", now)
}

func TestValidateDefaults(t *testing.T) {
	t.Parallel()
	e, err := validate(`{"actor_id":"u1","action":"user.login","ip_address":"::ffff:10.0.0.1"}`)
	if err != nil {
		t.Fatal(err)
	}
	if e.ActorType != "user" || e.Outcome != "success" || e.Severity != "info" || e.SourceAccountID != "primary" {
		t.Errorf("defaults: %+v", e)
	}
	if !e.OccurredAt.Equal(now.Truncate(time.Microsecond)) || !e.RecordedAt.Equal(e.OccurredAt) {
		t.Errorf("times: occurred %v recorded %v", e.OccurredAt, e.RecordedAt)
	}
	if e.IPAddress != "10.0.0.1" {
		t.Errorf("ip_address not normalised: %q", e.IPAddress)
	}
	if e.ID.Version() != 7 {
		t.Errorf("id version %d, want 7", e.ID.Version())
	}
	if string(e.Metadata) != "{}" {
		t.Errorf("metadata %s", e.Metadata)
	}

	in, _ := DecodeEventInput(strings.NewReader(`{"actor_type":"system","action":"cron.run","occurred_at":"2026-11-27T13:00:00.5+01:00"}`))
	e, err = in.Validate("acme", "billing", now)
	if err != nil {
		t.Fatal(err)
	}
	if e.Source != "billing" || e.ActorID != "" || e.OccurredAt.Format(TimeFormat) != "2026-11-27T12:00:00.500000Z" {
		t.Errorf("got source %q actor %q occurred %s", e.Source, e.ActorID, e.OccurredAt.Format(TimeFormat))
	}
}

func TestValidateRejects(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, body, want string }{
		{"empty body", ``, "body: empty"},
		{"malformed", `{"action":`, "body: truncated"},
		{"syntax", `{"action" "x"}`, "malformed JSON"},
		{"not object", `[1]`, "expected a JSON object"},
		{"wrong type", `{"action":5}`, "action: expected a string"},
		{"wrong type metadata", `{"action":"a","actor_id":"u","metadata":[1]}`, "metadata: must be a JSON object"},
		{"unknown field", `{"action":"a","actor_id":"u","colour":"red"}`, "colour: unknown field"},
		{"server field", `{"action":"a","actor_id":"u","seq":3}`, "seq is assigned by the server"},
		{"account in body", `{"action":"a","actor_id":"u","source_account_id":"x"}`, "source_account_id comes from"},
		{"trailing data", `{"action":"a","actor_id":"u"} {}`, "unexpected data"},
		{"missing action", `{"actor_id":"u"}`, "action: required"},
		{"bad action", `{"action":"user login","actor_id":"u"}`, "action: must be dot notation"},
		{"action wildcard", `{"action":"user.*","actor_id":"u"}`, "action: must be dot notation"},
		{"long action", `{"action":"` + strings.Repeat("a", 129) + `","actor_id":"u"}`, "action: longer than 128"},
		{"missing actor", `{"action":"a.b"}`, "actor_id: required unless actor_type is system"},
		{"actor type", `{"action":"a.b","actor_id":"u","actor_type":"robot"}`, "actor_type: must be one of user, system"},
		{"outcome", `{"action":"a.b","actor_id":"u","outcome":"ok"}`, "outcome: must be one of"},
		{"severity", `{"action":"a.b","actor_id":"u","severity":"fatal"}`, "severity: must be one of"},
		{"ip", `{"action":"a.b","actor_id":"u","ip_address":"300.1.1.1"}`, "ip_address: not an IPv4 or IPv6"},
		{"ip zone", `{"action":"a.b","actor_id":"u","ip_address":"fe80::1%eth0"}`, "ip_address"},
		{"nul", `{"action":"a.b","actor_id":"u\u0000x"}`, "actor_id: contains a NUL byte"},
		{"nul in metadata", `{"action":"a.b","actor_id":"u","metadata":{"k":"\u0000"}}`, "NUL"},
		{"time", `{"action":"a.b","actor_id":"u","occurred_at":"yesterday"}`, "occurred_at: not an RFC 3339"},
		{"time no zone", `{"action":"a.b","actor_id":"u","occurred_at":"2026-01-01T00:00:00"}`, "occurred_at: not an RFC 3339"},
		{"future", `{"action":"a.b","actor_id":"u","occurred_at":"2026-11-29T12:00:00Z"}`, "more than 24 hours in the future"},
		{"ancient", `{"action":"a.b","actor_id":"u","occurred_at":"1969-12-31T23:59:59Z"}`, "year must be between"},
		{"long actor", `{"action":"a.b","actor_id":"` + strings.Repeat("u", 257) + `"}`, "actor_id: longer than 256"},
		{"control in key", `{"action":"a.b","actor_id":"u","idempotency_key":"a\u001fb"}`, "idempotency_key: contains a control character"},
		{"other case", `{"Action":"a.b","actor_id":"u"}`, "Action: unknown field"},
		{"duplicate member", `{"action":"a.b","actor_id":"u","action":"c.d"}`, "action: given more than once"},
		{"ancient in UTC", `{"action":"a.b","actor_id":"u","occurred_at":"1970-01-01T00:00:00+14:00"}`, "year must be between"},
		{"long key", `{"action":"a.b","actor_id":"u","idempotency_key":"` + strings.Repeat("k", 256) + `"}`, "idempotency_key: longer than 255"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := validate(c.body)
			if ErrorCode(err) != EINVALID || !strings.Contains(ErrorMessage(err), c.want) {
				t.Fatalf("error = %v; want EINVALID containing %q", err, c.want)
			}
		})
	}
}

func TestValidateAccount(t *testing.T) {
	t.Parallel()
	in, _ := DecodeEventInput(strings.NewReader(`{"action":"a.b","actor_id":"u"}`))
	if _, err := in.Validate("bad account!", "", now); ErrorCode(err) != EINVALID {
		t.Fatalf("bad account accepted: %v", err)
	}
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	a, _ := DecodeEventInput(strings.NewReader(`{"action":"a.b","actor_id":"u","metadata":{"x":1,"y":2}}`))
	b, _ := DecodeEventInput(strings.NewReader(`{"metadata":{"y":2,"x":1.0},"actor_id":"u","action":"a.b"}`))
	c, _ := DecodeEventInput(strings.NewReader(`{"action":"a.b","actor_id":"v","metadata":{"x":1,"y":2}}`))
	ea, _ := a.Validate("primary", "", now)
	eb, _ := b.Validate("primary", "", now.Add(time.Second)) // a retry a second later
	ec, _ := c.Validate("primary", "", now)
	if a.Fingerprint(ea) != b.Fingerprint(eb) {
		t.Error("the same event written differently has another fingerprint")
	}
	if a.Fingerprint(ea) == c.Fingerprint(ec) {
		t.Error("different events share a fingerprint")
	}
	// Stored keys keep their fingerprints: the form is fixed, each text
	// as "<length>:<text>;" (no occurred_at given: an empty first text).
	want := sha256.Sum256([]byte("0:;1:u;4:user;3:a.b;0:;0:;7:success;4:info;0:;0:;0:;0:;13:{\"x\":1,\"y\":2};"))
	if got := a.Fingerprint(ea); got != hex.EncodeToString(want[:]) {
		t.Errorf("fingerprint %s; want %x", got, want)
	}
}

func TestValidAccountID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		s    string
		want bool
	}{
		{"primary", true},
		{"a", true},
		{"Org_1.team:x@example.com-2", true},
		{strings.Repeat("a", 128), true},
		{"", false},
		{strings.Repeat("a", 129), false},
		{"with space", false},
		{"a/b", false},
		{"é", false},
		{"a\x00", false},
		{"a;drop", false},
	} {
		if got := ValidAccountID(tc.s); got != tc.want {
			t.Errorf("ValidAccountID(%q) = %v, want %v", tc.s, got, tc.want)
		}
	}
}

// TestValidPatterns: ValidAction and ValidAccountID accept exactly what
// their regular expressions accept.
func TestValidPatterns(t *testing.T) {
	action := regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
	account := regexp.MustCompile(`^[A-Za-z0-9_.:@-]{1,128}$`)
	check := func(s string) {
		if got, want := ValidAction(s), len(s) <= MaxActionLen && action.MatchString(s); got != want {
			t.Errorf("ValidAction(%q) = %v; the pattern says %v", s, got, want)
		}
		if got, want := ValidAccountID(s), account.MatchString(s); got != want {
			t.Errorf("ValidAccountID(%q) = %v; the pattern says %v", s, got, want)
		}
	}
	for _, s := range []string{"", ".", "a", "a.", ".a", "a..b", "user.login", "user.login_failed", "a-b.c_d.E9",
		"acct:1@x.y", "acct/1", "a b", "é", "a\n", "user.login\x00", strings.Repeat("a", 128), strings.Repeat("a", 129),
		strings.Repeat("ab.", 42) + "ab", strings.Repeat("ab.", 43) + "a"} {
		check(s)
	}
	alphabet := "aZ09_-.:@ /é\n"
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		check(string(b))
	}
}
