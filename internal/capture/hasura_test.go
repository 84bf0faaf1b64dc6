package capture

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nself-org/nself-audit/internal/audit"
)

func readPayload(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "hasura", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHasuraPayloads maps each recorded payload to its event: action,
// actor, account, resource, request id, occurred_at and the exact metadata.
func TestHasuraPayloads(t *testing.T) {
	cases := []struct {
		file                     string
		action, actor, actorType string
		account                  string
		resType, resID, request  string
		occurred                 string
		meta                     string
		idempotencyKey           string
	}{
		{
			file: "insert.json", action: "orders.insert", actor: "3f0c2b1e-6a55-4d0e-9f43-2b8f1d6f7a10", actorType: "user",
			account: "acme", resType: "orders", resID: "1042", request: "4bf92f3577b34da6a3ce929d0e0e4736",
			occurred: "2026-11-27T08:30:12.481213Z",
			meta: `{"hasura_event_id":"b8a3a0b4-6f67-4b41-9a0c-2f5a7b2c1d01","new":{"api_key":"[redacted]","created_at":"2026-11-27T08:30:12.481213+00:00",` +
				`"customer":"Ada Lovelace","id":1042,"settings":{"theme":"dark","webhooks":[{"signing_secret":"[redacted]","url":"https://example.com/hook"}]},` +
				`"total":129.9},"role":"user","trigger":"nself_audit_orders"}`,
			idempotencyKey: "hasura\x1fb8a3a0b4-6f67-4b41-9a0c-2f5a7b2c1d01",
		},
		{
			// Only the columns that changed; the secret one shows that it
			// changed, not its values; a bigint beyond 2^53 keeps its digits
			// (as a string), and differs from the double next to it.
			file: "update.json", action: "auth.users.update", actor: "3f0c2b1e-6a55-4d0e-9f43-2b8f1d6f7a10", actorType: "user",
			account: "acme", resType: "auth.users", resID: "3f0c2b1e-6a55-4d0e-9f43-2b8f1d6f7a10", request: "0af7651916cd43dd8448eb211c80319c",
			occurred: "2026-11-27T08:31:40.022117Z",
			meta: `{"changes":{"email":{"new":"ada@lovelace.dev","old":"ada@example.com"},"login_count":{"new":9007199254740992,"old":"9007199254740993"},` +
				`"password_hash":{"new":"[redacted]","old":"[redacted]"}},` +
				`"hasura_event_id":"6d0f7c8e-5b1a-4c3d-8e9f-0a1b2c3d4e5f","role":"user","trigger":"nself_audit_auth_users"}`,
		},
		{
			// No session (the admin secret, an older Hasura's null): a
			// system event, in the row's account; a numeric trace id; a
			// created_at without a zone is UTC.
			file: "delete.json", action: "orders.delete", actor: "", actorType: "system",
			account: "globex", resType: "orders", resID: "1042", request: "7359239047162871551",
			occurred: "2026-11-27T08:32:05.611904Z",
			meta: `{"hasura_event_id":"0e7c9b1d-3f2a-4e5b-8c6d-7a8b9c0d1e2f","old":{"api_key":"[redacted]","created_at":"2026-11-27T08:30:12.481213+00:00",` +
				`"customer":"Ada Lovelace","id":1042,"settings":null,"source_account_id":"globex","total":129.9},"trigger":"nself_audit_orders"}`,
		},
		{
			// Invoked from the console with the admin role and no user.
			file: "manual.json", action: "documents.manual", actor: "", actorType: "system",
			account: "acme", resType: "documents", resID: "77", request: "5c1f1a2b3c4d5e6f7a8b9c0d1e2f3a4b",
			occurred: "2026-11-27T08:33:00.000001Z",
			meta: `{"hasura_event_id":"f1e2d3c4-b5a6-4978-8695-a4b3c2d1e0f9","new":{"id":77,"name":"Quarterly report","share_token":"[redacted]",` +
				`"source_account_id":"acme"},"role":"admin","trigger":"nself_audit_documents"}`,
		},
		{
			file: "wrapped.json", action: "comments.insert", actor: "9d2b7e44-1c3a-4f5e-8a6b-0c1d2e3f4a5b", actorType: "user",
			account: "acme", resType: "comments", resID: "501", request: "a3ce929d0e0e47364bf92f3577b34da6",
			occurred: "2026-11-27T08:34:10.500000Z",
			meta:     `{"hasura_event_id":"2a3b4c5d-6e7f-4a8b-9c0d-1e2f3a4b5c6d","new":{"body":"First!","id":501,"post_id":12},"role":"user","trigger":"nself_audit_comments"}`,
		},
	}
	r := NewRedactor(nil)
	now := testNow
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			ev, err := DecodeHasura(bytes.NewReader(readPayload(t, c.file)), nil)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Change.Account != c.account {
				t.Errorf("account %q, want %q", ev.Change.Account, c.account)
			}
			in, err := ev.Change.Input(r)
			if err != nil {
				t.Fatal(err)
			}
			e, err := in.Validate(ev.Change.Account, "", now)
			if err != nil {
				t.Fatal(err)
			}
			got := []string{e.Action, e.ActorID, e.ActorType, e.SourceAccountID, e.ResourceType, e.ResourceID, e.RequestID, e.Source, audit.FormatTime(e.OccurredAt)}
			want := []string{c.action, c.actor, c.actorType, c.account, c.resType, c.resID, c.request, "hasura", c.occurred}
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("event\n got %q\nwant %q", got, want)
			}
			if string(e.Metadata) != c.meta {
				t.Errorf("metadata\n got %s\nwant %s", e.Metadata, c.meta)
			}
			if c.idempotencyKey != "" && ev.IdempotencyKey != c.idempotencyKey {
				t.Errorf("idempotency key %q", ev.IdempotencyKey)
			}
		})
	}
}

// TestHasuraRetryFingerprint: a retry (only delivery_info changes) has the
// same key and fingerprint; another event under the same id does not.
func TestHasuraRetryFingerprint(t *testing.T) {
	raw := readPayload(t, "insert.json")
	first, err := DecodeHasura(bytes.NewReader(raw), nil)
	if err != nil {
		t.Fatal(err)
	}
	retry := bytes.Replace(raw, []byte(`"current_retry": 0`), []byte(`"current_retry": 3`), 1)
	if bytes.Equal(retry, raw) {
		t.Fatal("the payload has no current_retry to change")
	}
	again, err := DecodeHasura(bytes.NewReader(retry), nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.IdempotencyKey != first.IdempotencyKey || again.Fingerprint != first.Fingerprint {
		t.Errorf("a retry differs: %q/%q vs %q/%q", again.IdempotencyKey, again.Fingerprint, first.IdempotencyKey, first.Fingerprint)
	}
	other, err := DecodeHasura(bytes.NewReader(bytes.Replace(raw, []byte("Ada Lovelace"), []byte("Charles Babbage"), 1)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if other.Fingerprint == first.Fingerprint {
		t.Error("another row under the same event id has the same fingerprint")
	}
	// The wrapped form of the same event is the same event.
	wrapped, err := DecodeHasura(bytes.NewReader(append(append([]byte(`{"payload":`), raw...), '}')), nil)
	if err != nil {
		t.Fatal(err)
	}
	if wrapped.Fingerprint != first.Fingerprint {
		t.Error("the wrapped form has another fingerprint")
	}
}

// TestHasuraKeyColumns: ?key= names the key; several columns make a JSON
// array; a missing key column leaves the resource id empty.
func TestHasuraKeyColumns(t *testing.T) {
	raw := readPayload(t, "insert.json")
	r := NewRedactor(nil)
	for _, c := range []struct {
		keys []string
		want string
	}{
		{[]string{"customer"}, "Ada Lovelace"},
		{[]string{"id", "customer"}, `[1042,"Ada Lovelace"]`},
		{[]string{"nope"}, ""},
		{[]string{"api_key"}, "[redacted]"},
	} {
		ev, err := DecodeHasura(bytes.NewReader(raw), c.keys)
		if err != nil {
			t.Fatal(err)
		}
		in, err := ev.Change.Input(r)
		if err != nil {
			t.Fatal(err)
		}
		if in.ResourceID != c.want {
			t.Errorf("key %v: resource id %q, want %q", c.keys, in.ResourceID, c.want)
		}
	}
}

// TestHasuraBadPayloads: each malformed payload is EINVALID naming what is
// wrong.
func TestHasuraBadPayloads(t *testing.T) {
	good := string(readPayload(t, "insert.json"))
	cases := []struct{ body, want string }{
		{``, "body: empty"},
		{`[]`, "body: expected a JSON object"},
		{`{"id":`, "body: malformed JSON"},
		{`{} {}`, "unexpected data after"},
		{strings.Replace(good, `"op": "INSERT"`, `"op": "TRUNCATE"`, 1), "event.op: must be INSERT, UPDATE, DELETE or MANUAL"},
		{strings.Replace(good, `"op": "INSERT"`, `"op": "UPDATE"`, 1), "event.data.old: required for UPDATE"},
		{strings.Replace(good, `"id": "b8a3a0b4`, `"idx": "b8a3a0b4`, 1), "id: required"},
		{strings.Replace(good, `"id": "b8a3a0b4-6f67-4b41-9a0c-2f5a7b2c1d01"`, `"id": 5`, 1), "id: expected a string"},
		{strings.Replace(good, `"name": "orders"`, `"name": "my orders"`, 1), `table "my orders": its name cannot form an action`},
		{strings.Replace(good, `"schema": "public"`, `"schema": ""`, 1), "table.schema: required"},
		{strings.Replace(good, `"x-hasura-role": "user"`, `"x-hasura-role": 7`, 1), "event.session_variables.x-hasura-role: expected a string"},
		{strings.Replace(good, `"created_at": "2026-11-27T08:30:12.481213Z"`, `"created_at": "yesterday"`, 1), "created_at: not a time"},
		{strings.Replace(good, `"span_id": "00f067aa0ba902b7"`, `"span_id": "00f067aa0ba902b7", "span_id": "x"`, 1), "event.trace_context.span_id: given more than once"},
		{strings.Replace(good, `"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"`, `"trace_id": true`, 1), "trace_id: expected a string or a number"},
		{strings.Replace(good, `"old": null`, `"old": []`, 1), "event.data.old: expected a JSON object"},
		{`{"payload": 3}`, "payload: expected a JSON object"},
		{strings.Replace(good, `"schema": "public"`, `"schema": "np_nself_audit"`, 1), "tables of schema np_nself_audit are never captured"},
	}
	for _, c := range cases {
		_, err := DecodeHasura(strings.NewReader(c.body), nil)
		if audit.ErrorCode(err) != audit.EINVALID || !strings.Contains(audit.ErrorMessage(err), c.want) {
			t.Errorf("%.60q: %v; want EINVALID containing %q", c.body, err, c.want)
		}
	}
}

var testNow = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
