package audit

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
)

// reflectEventJSON is how Event.MarshalJSON encoded an event before
// AppendJSON: encoding/json over the struct, with the times replaced by
// their TimeFormat strings. It is the oracle AppendJSON must match.
func reflectEventJSON(e *Event) []byte {
	type plain Event
	b, err := json.Marshal(struct {
		plain
		OccurredAt string `json:"occurred_at"`
		RecordedAt string `json:"recorded_at"`
	}{plain(*e), FormatTime(e.OccurredAt), FormatTime(e.RecordedAt)})
	if err != nil {
		panic(err)
	}
	return b
}

// checkEventJSON fails unless AppendJSON, MarshalJSON and encoding/json
// (calling MarshalJSON, as the list answers do) all give the oracle's
// bytes.
func checkEventJSON(t *testing.T, e *Event) {
	t.Helper()
	want := reflectEventJSON(e)
	if got := e.AppendJSON([]byte("prefix")); !bytes.Equal(got[6:], want) || string(got[:6]) != "prefix" {
		t.Fatalf("AppendJSON:\n got %s\nwant %s", got, want)
	}
	if got, _ := e.MarshalJSON(); !bytes.Equal(got, want) {
		t.Fatalf("MarshalJSON:\n got %s\nwant %s", got, want)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode([]*Event{e}); err != nil {
		t.Fatal(err)
	}
	if got := bytes.TrimSuffix(buf.Bytes(), []byte("\n")); !bytes.Equal(got, append(append([]byte("["), want...), ']')) {
		t.Fatalf("in a list:\n got %s\nwant [%s]", got, want)
	}
}

// TestEventJSONMatchesReflection: the hand-written encoding gives the bytes
// encoding/json gives, for plain events and for every character that JSON
// or HTML escaping treats specially, in each string field and in metadata.
func TestEventJSONMatchesReflection(t *testing.T) {
	base := Event{
		ID: uuid.MustParse("01a21cae-3818-7458-b92a-09e0c2cdc2df"), SourceAccountID: "acct-0", Seq: 592419,
		OccurredAt: time.Date(2026, 11, 27, 11, 5, 9, 400259000, time.UTC),
		RecordedAt: time.Date(2026, 11, 27, 12, 5, 9, 0, time.FixedZone("x", 3600)),
		ActorID:    "user-398", ActorType: "service", Action: "settings.updated", ResourceType: "doc",
		ResourceID: "res-1044", Outcome: "success", Severity: "info", IPAddress: "10.57.17.62",
		UserAgent: "Mozilla/5.0", RequestID: "req-z-1bo", Source: "bench",
		Metadata: CanonicalJSON(`{"attempt":2,"mfa":false,"session":"s-799390eb54"}`),
		PrevHash: "fac9896cbab2cdc8d9c36ee0e63d3452e7207e260f466576eb6f434d0e383f86",
		Hash:     "3f4d3b16f8ecf29f8cbbf719bcf6e7ec348f9291c6f71575efc34e6eff1e2742",
	}
	checkEventJSON(t, &base)
	empty := Event{}
	checkEventJSON(t, &empty)

	specials := []string{"", "\"", "\\", "<", ">", "&", "\u2028", "\u2029", "\u2027", "\u202a", "\x00", "\x01",
		"\b", "\f", "\n", "\r", "\t", "\x1f", "\x7f", "\xff", "\xe2\x80", "\xe2\x80\xa8x", "é", "日本", "😀",
		"\xed\xa0\x80", "a</script>b", "plain ascii"}
	for _, sp := range specials {
		e := base
		for _, p := range []*string{&e.SourceAccountID, &e.ActorID, &e.ActorType, &e.Action, &e.ResourceType,
			&e.ResourceID, &e.Outcome, &e.Severity, &e.IPAddress, &e.UserAgent, &e.RequestID, &e.Source,
			&e.PrevHash, &e.Hash} {
			*p = "x" + sp + "y" + sp
		}
		checkEventJSON(t, &e)
		meta, err := json.Marshal(map[string]string{"k" + sp: sp + "v"})
		if err != nil {
			t.Fatal(err)
		}
		canon, err := Canonicalize(meta)
		if err != nil {
			continue // NUL and invalid UTF-8 never reach stored metadata
		}
		e.Metadata = canon
		checkEventJSON(t, &e)
	}

	// Random strings over the special characters and random runes.
	rng := rand.New(rand.NewPCG(1, 2))
	randString := func() string {
		var b []byte
		for range rng.IntN(12) {
			if rng.IntN(2) == 0 {
				b = append(b, specials[rng.IntN(len(specials))]...)
			} else {
				b = append(b, string(rune(rng.IntN(0x30000)))...)
			}
		}
		return string(b)
	}
	for range 2000 {
		e := base
		e.Seq = rng.Int64()
		e.ID = uuid.UUID(randBytes16(rng))
		e.OccurredAt = time.Unix(rng.Int64N(1<<33), rng.Int64N(1e9))
		for _, p := range []*string{&e.ActorID, &e.Action, &e.ResourceID, &e.UserAgent, &e.Source} {
			*p = randString()
		}
		if canon, err := Canonicalize([]byte(`{"m":` + string(mustJSON(randString())) + `}`)); err == nil {
			e.Metadata = canon
		}
		checkEventJSON(t, &e)
	}
}

func randBytes16(rng *rand.Rand) (b [16]byte) {
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// FuzzEventJSON: for any strings and any metadata the canonicalizer
// accepts, AppendJSON gives encoding/json's bytes.
func FuzzEventJSON(f *testing.F) {
	f.Add("user-1", "doc.read", "Mozilla/5.0 <x> & \u2028", `{"a":"<b>","c":[1,2.5,"\u2029"]}`, int64(1))
	f.Add("\xff\xfe", "\x00\x1f", "\"\\", `{"k":"&amp;"}`, int64(-1))
	f.Add("", "", "", `{}`, int64(0))
	f.Fuzz(func(t *testing.T, actor, action, agent, meta string, seq int64) {
		e := Event{ActorID: actor, Action: action, UserAgent: agent, Seq: seq, Hash: action + agent,
			OccurredAt: time.Unix(seq%(1<<34), 0)}
		if canon, err := Canonicalize([]byte(meta)); err == nil {
			e.Metadata = canon
		}
		checkEventJSON(t, &e)
	})
}
