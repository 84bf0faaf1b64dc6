package audit

import (
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
	for _, body := range fastBodies {
		in, ok := decodeEventFast([]byte(body))
		if !ok {
			t.Errorf("fast decoder refused %q", body)
			continue
		}
		want, err := decodeEventStrict(strings.NewReader(body))
		if err != nil || !reflect.DeepEqual(in, want) {
			t.Errorf("%q: fast %+v; encoding/json %+v (%v)", body, in, want, err)
		}
	}
	for _, body := range slowBodies {
		if in, ok := decodeEventFast([]byte(body)); ok {
			t.Errorf("fast decoder took %q: %+v", body, in)
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
		want, wantErr := decodeEventStrict(strings.NewReader(body))
		if in, ok := decodeEventFast([]byte(body)); ok {
			if wantErr != nil || !reflect.DeepEqual(in, want) {
				t.Fatalf("%q: fast %+v; encoding/json %+v (%v)", body, in, want, wantErr)
			}
		}
		got, err := DecodeEventInput(strings.NewReader(body))
		if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) || !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: DecodeEventInput %+v (%v); encoding/json %+v (%v)", body, got, err, want, wantErr)
		}
	})
}
