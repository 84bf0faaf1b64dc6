package audit

import (
	"io"
	"reflect"
	"strings"
	"testing"
)

// fastBodies are bodies the one-pass decoder takes; slowBodies are ones it
// must leave to encoding/json.
var (
	fastBodies = []string{
		`{}`,
		` { } `,
		`{"action":"doc.read"}`,
		`{"actor_id":"user-1","actor_type":"user","action":"user.login","resource_type":"doc","resource_id":"d1","outcome":"success","severity":"info","ip_address":"10.0.0.1","user_agent":"Mozilla/5.0 (X11)","request_id":"r1","source":"bench","metadata":{"session":"s-1","mfa":true,"attempt":2},"idempotency_key":"k1","occurred_at":"2026-11-27T10:00:00Z"}`,
		"{\n\t\"action\" : \"doc.read\" ,\r\n \"metadata\" : { \"a\" : [1, {\"b\": \"}\\\"]\"}] } }\n",
		`{"actor_id":"é日本😀","action":"x.y"}`,
		`{"metadata":{},"action":"x.y"}`,
	}
	slowBodies = []string{
		``, `[]`, `{`, `{"action":"x"`, `{"action":"x"} {}`, `{"action":"x",}`, `{,}`,
		`{"Action":"x"}`, `{"action":"x","action":"y"}`, `{"unknown":"x"}`, `{"seq":1}`,
		`{"action":"a\u0041"}`, `{"action":"a\"b"}`, "{\"action\":\"a\x01\"}", "{\"action\":\"\xff\"}",
		`{"action":1}`, `{"action":null}`, `{"occurred_at":null}`, `{"metadata":null}`, `{"metadata":[]}`,
		`{"metadata":"x"}`, `{"metadata":{"a":}}`, `{"metadata":{"a":1}`, `{"metadata":{"a":1}}}`,
		`{"action":"x"}x`, `{"action"::"x"}`, `{"action" "x"}`, `{"act\ion":"x"}`,
	}
)

// TestDecodeEventFast: the one-pass decoder takes the plain bodies, with
// encoding/json's result, and leaves the others to it.
func TestDecodeEventFast(t *testing.T) {
	fastTakes(t, fastBodies, slowBodies, decodeEventFast, decodeEventStrict)
}

// TestDecodeEventFastCopiesOnce: the members of a plain event are cut from
// one copy of the body (four allocations in all for this body: the copy,
// the EventInput, the metadata and occurred_at's pointer), and none of them
// shares the caller's bytes.
func TestDecodeEventFastCopiesOnce(t *testing.T) {
	body := fastBodies[3]
	b := []byte(body)
	if n := testing.AllocsPerRun(100, func() { decodeEventFast(b) }); n > 4 {
		t.Errorf("decoding %d bytes took %v allocations, want at most 4", len(b), n)
	}
	in, ok := decodeEventFast(b)
	if !ok {
		t.Fatalf("fast decoder refused %.80q", body)
	}
	for i := range b {
		b[i] = 'x'
	}
	want, err := decodeEventStrict(strings.NewReader(body))
	if err != nil || !reflect.DeepEqual(in, want) {
		t.Errorf("after the body was overwritten: %+v; want %+v (%v)", in, want, err)
	}
}

// fastTakes checks that fast takes each of plain with strict's result, and
// declines each of others.
func fastTakes[T any](t *testing.T, plain, others []string, fast func([]byte) (T, bool), strict func(io.Reader) (T, error)) {
	t.Helper()
	for _, body := range plain {
		v, ok := fast([]byte(body))
		if !ok {
			t.Errorf("fast decoder refused %.80q", body)
			continue
		}
		want, err := strict(strings.NewReader(body))
		if err != nil || !reflect.DeepEqual(v, want) {
			t.Errorf("%.80q: fast %+v; encoding/json %+v (%v)", body, v, want, err)
		}
	}
	for _, body := range others {
		if v, ok := fast([]byte(body)); ok {
			t.Errorf("fast decoder took %.80q: %+v", body, v)
		}
	}
}

// FuzzDecodeEventFast: whenever the one-pass decoder takes a body,
// encoding/json accepts it and decodes the same EventInput; and
// DecodeEventInput answers every body as encoding/json alone does.
func FuzzDecodeEventFast(f *testing.F) {
	for _, b := range append(append([]string{}, fastBodies...), slowBodies...) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body string) {
		fastMatchesStrict(t, body, decodeEventFast, decodeEventStrict, DecodeEventInput)
	})
}

// fastMatchesStrict fails t when fast takes body with another result than
// strict (encoding/json) gives, or when decode, the decoder callers use,
// answers body otherwise than strict alone does.
func fastMatchesStrict[T any](t *testing.T, body string, fast func([]byte) (T, bool),
	strict, decode func(io.Reader) (T, error)) {
	t.Helper()
	want, wantErr := strict(strings.NewReader(body))
	if v, ok := fast([]byte(body)); ok && (wantErr != nil || !reflect.DeepEqual(v, want)) {
		t.Fatalf("%q: fast %+v; encoding/json %+v (%v)", body, v, want, wantErr)
	}
	got, err := decode(strings.NewReader(body))
	if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) || !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: decoded %+v (%v); encoding/json %+v (%v)", body, got, err, want, wantErr)
	}
}

// canonBodies seed the canonicalizer tests: plain objects the one-pass
// canonicalizer takes, and ones it leaves to Canonicalize.
var canonBodies = []string{
	`{}`, `{"b":1,"a":"x","c":[true,false,null,{"z":-12,"y":"日本"}]}`, ` { "session" : "s-1" , "mfa" : true , "attempt" : 2 } `,
	`{"n":0}`, `{"n":-0}`, `{"n":1.5}`, `{"n":1e3}`, `{"n":1234567890123456}`, `{"n":01}`, `{"a":"\u00e9"}`,
	`{"é":1}`, `{"a":1,"a":2}`, `{"a":[1,2,]}`, `{"a":}`, `{"a":tru}`, `{"a":"x"}x`, `{"a":[]}`, `{"a":{"b":{}}}`,
	`{"B":1,"a":2,"_":3,"0":4}`,
}

// TestCanonicalFast: the one-pass canonicalizer takes plain objects, with
// Canonicalize's bytes, and leaves the rest.
func TestCanonicalFast(t *testing.T) {
	taken := 0
	for _, body := range canonBodies {
		out, ok := canonicalFast([]byte(body))
		if !ok {
			continue
		}
		taken++
		want, err := Canonicalize([]byte(body))
		if err != nil || string(out) != string(want) {
			t.Errorf("%q: fast %s; Canonicalize %s (%v)", body, out, want, err)
		}
	}
	if taken < 7 {
		t.Errorf("the fast canonicalizer took %d of the plain seeds; want at least 7", taken)
	}
	for _, body := range []string{`{"n":-0}`, `{"n":1.5}`, `{"a":"\u00e9"}`, `{"é":1}`, `{"a":1,"a":2}`} {
		if out, ok := canonicalFast([]byte(body)); ok {
			t.Errorf("fast canonicalizer took %q: %s", body, out)
		}
	}
}

// FuzzCanonicalFast: whenever the one-pass canonicalizer takes an input,
// Canonicalize accepts it and gives the same bytes.
func FuzzCanonicalFast(f *testing.F) {
	for _, b := range canonBodies {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body string) {
		out, ok := canonicalFast([]byte(body))
		if !ok {
			return
		}
		want, err := Canonicalize([]byte(body))
		if err != nil || string(out) != string(want) {
			t.Fatalf("%q: fast %s; Canonicalize %s (%v)", body, out, want, err)
		}
	})
}

// Batch bodies the one-pass batch decoder takes, and ones it must leave to
// encoding/json.
var (
	fastBatches = []string{
		`{"events":[{}]}`,
		`{"events":[{"actor_id":"u1","action":"a.b"},{"actor_type":"system","action":"c.d","metadata":{"x":[1,"]}"]}}]}`,
		" {\n \"events\" : [ {\"action\":\"a.b\"} ,\t{\"action\":\"c.d\"} ] } \n",
	}
	slowBatches = []string{
		``, `{}`, `[]`, `{"events":[]}`, `{"events":null}`, `{"events":{}}`, `{"events":[1]}`, `{"events":[null]}`,
		`{"events":[{}],"events":[{}]}`, `{"Events":[{}]}`, `{"events":[{}],"x":1}`, `{"event\u0073":[{}]}`,
		`{"events":[{},]}`, `{"events":[{}}`, `{"events":[{}]`, `{"events":[{}]}x`, `{"events":[{}]} {}`,
		`{"events":[{"action":"a\u0041"}]}`, `{"events":[{"idempotency_key":"k"}]}`, `{"events":[{"seq":1}]}`,
		`{"events":[{"action":"x"}{"action":"y"}]}`, `{"events":[{"metadata":{"a":}}]}`,
		`{"events":[` + strings.Repeat(`{},`, MaxBatch) + `{}]}`,
	}
)

// TestDecodeBatchFast: the one-pass batch decoder takes the plain bodies,
// with encoding/json's result, and leaves the others to it; a full batch
// of MaxBatch events is taken.
func TestDecodeBatchFast(t *testing.T) {
	full := `{"events":[` + strings.Repeat(`{"action":"a.b"},`, MaxBatch-1) + `{"action":"a.b"}]}`
	fastTakes(t, append([]string{full}, fastBatches...), slowBatches, decodeBatchFast, decodeBatchStrict)
}

// FuzzDecodeBatchFast: whenever the one-pass batch decoder takes a body,
// encoding/json accepts it and decodes the same events; and DecodeBatch
// answers every body as encoding/json alone does.
func FuzzDecodeBatchFast(f *testing.F) {
	for _, b := range append(append([]string{}, fastBatches...), slowBatches...) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body string) {
		fastMatchesStrict(t, body, decodeBatchFast, decodeBatchStrict, DecodeBatch)
	})
}
