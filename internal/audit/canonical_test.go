package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestCanonicalizeRFC8785Example(t *testing.T) {
	t.Parallel()
	// The example of RFC 8785, section 3.2.2.
	in := `{
	  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
	  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
	  "literals": [null, true, false]
	}`
	want := `{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`
	got, err := Canonicalize([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestCanonicalizeSortsByUTF16(t *testing.T) {
	t.Parallel()
	// RFC 8785, section 3.2.3: U+1F600 (a surrogate pair D83D DE00) sorts
	// before U+FB33, unlike in UTF-8 byte order.
	in := `{"\u20ac":"Euro","\r":"CR","\ufb33":"Hebrew","1":"One","\ud83d\ude00":"Smiley","\u0080":"Control","\u00f6":"Latin"}`
	want := "{\"\\r\":\"CR\",\"1\":\"One\",\"\u0080\":\"Control\",\"ö\":\"Latin\",\"€\":\"Euro\",\"😀\":\"Smiley\",\"\ufb33\":\"Hebrew\"}"
	got, err := Canonicalize([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestFormatNumber(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   float64
		want string
	}{
		{0, "0"},
		{math.Copysign(0, -1), "0"},
		{1, "1"},
		{-1.5, "-1.5"},
		{0.1, "0.1"},
		{1e21, "1e+21"},
		{1e20, "100000000000000000000"},
		{123456789012345680000, "123456789012345680000"},
		{1e-6, "0.000001"},
		{1e-7, "1e-7"},
		{5e-324, "5e-324"},
		{math.MaxFloat64, "1.7976931348623157e+308"},
		{9007199254740992, "9007199254740992"},
		{-1.25e-10, "-1.25e-10"},
	}
	for _, c := range cases {
		if got := FormatNumber(c.in); got != c.want {
			t.Errorf("FormatNumber(%v) = %s, want %s", c.in, got, c.want)
		}
	}
}

func TestCanonicalizeMetadata(t *testing.T) {
	t.Parallel()
	ok := []struct{ in, want string }{
		{``, `{}`},
		{`null`, `{}`},
		{` { "b" : 1.0, "a" : { "z": [ ] , "y": "x" } } `, `{"a":{"y":"x","z":[]},"b":1}`},
	}
	for _, c := range ok {
		got, err := CanonicalizeMetadata([]byte(c.in))
		if err != nil || string(got) != c.want {
			t.Errorf("CanonicalizeMetadata(%q) = %s, %v; want %s", c.in, got, err, c.want)
		}
	}
	bad := []struct{ in, wantMsg string }{
		{`[1]`, "must be a JSON object"},
		{`"x"`, "must be a JSON object"},
		{`{"a":1,"a":2}`, "duplicate member"},
		{`{"a":"\u0000"}`, "NUL"},
		{`{"a":1e999}`, "out of range"},
		{`{"a":}`, "malformed"},
		{`{"a":1} {}`, "unexpected data"},
		{`{"a":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, "nested deeper"},
		{`{"a":"` + strings.Repeat("x", MaxMetadataBytes) + `"}`, "larger than 64 KiB"},
	}
	for _, c := range bad {
		_, err := CanonicalizeMetadata([]byte(c.in))
		if ErrorCode(err) != EINVALID || !strings.Contains(ErrorMessage(err), c.wantMsg) {
			t.Errorf("CanonicalizeMetadata(%.40q) error = %v; want EINVALID containing %q", c.in, err, c.wantMsg)
		}
	}
}

// TestCanonicalIsIdempotent: canonicalizing the canonical form, or
// PostgreSQL jsonb's rendering of it (other member order, spaces, exponents
// written out), gives the same bytes; the chain relies on it.
func TestCanonicalIsIdempotent(t *testing.T) {
	t.Parallel()
	canon, err := Canonicalize([]byte(`{"n":[1e21,1e-7,0.5,12345678901234567890],"s":"é\t"}`))
	if err != nil {
		t.Fatal(err)
	}
	jsonbText := `{"n": [1000000000000000000000, 0.0000001, 0.5, 12345678901234567000], "s": "é\t"}`
	for _, in := range []string{string(canon), jsonbText} {
		again, err := Canonicalize([]byte(in))
		if err != nil || string(again) != string(canon) {
			t.Errorf("Canonicalize(%s) = %s, %v; want %s", in, again, err, canon)
		}
	}
}

func fixedEvent() *Event {
	return &Event{
		ID:              uuid.MustParse("01900000-0000-7000-8000-000000000001"),
		SourceAccountID: "primary",
		Seq:             1,
		OccurredAt:      time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC),
		RecordedAt:      time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC),
		ActorID:         "user-1",
		ActorType:       "user",
		Action:          "user.login",
		Outcome:         "success",
		Severity:        "info",
		IPAddress:       "203.0.113.7",
		Metadata:        CanonicalJSON(`{"mfa":true}`),
	}
}

// TestCanonicalEventAndHash pins the documented encoding (docs/CHAIN.md): the
// expected bytes are written out by hand here, the hash computed from them.
func TestCanonicalEventAndHash(t *testing.T) {
	t.Parallel()
	e := fixedEvent()
	want := `{"action":"user.login","actor_id":"user-1","actor_type":"user","id":"01900000-0000-7000-8000-000000000001",` +
		`"ip_address":"203.0.113.7","metadata":{"mfa":true},"occurred_at":"2026-01-02T03:04:05.123456Z","outcome":"success",` +
		`"recorded_at":"2026-01-02T03:04:06.000000Z","request_id":"","resource_id":"","resource_type":"","seq":1,` +
		`"severity":"info","source":"","source_account_id":"primary","user_agent":""}`
	if got := string(Canonical(e)); got != want {
		t.Fatalf("canonical:\ngot  %s\nwant %s", got, want)
	}
	sum := sha256.Sum256(append(make([]byte, 32), want...))
	if err := Link(e, 0, GenesisHash); err != nil {
		t.Fatal(err)
	}
	if e.Seq != 1 || e.PrevHash != GenesisHash || e.Hash != hex.EncodeToString(sum[:]) {
		t.Fatalf("Link: seq %d prev %s hash %s; want 1, genesis, %x", e.Seq, e.PrevHash, e.Hash, sum)
	}
	// Any change to a hashed field changes the hash.
	prev := e.Hash
	e2 := fixedEvent()
	e2.Metadata = CanonicalJSON(`{"mfa":false}`)
	if err := Link(e2, 0, GenesisHash); err != nil || e2.Hash == prev {
		t.Fatalf("hash did not change with metadata: %v", err)
	}
	if _, err := ComputeHash("xyz", e); err == nil {
		t.Fatal("ComputeHash accepted a malformed prev_hash")
	}
}
