package capture

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/nself-org/nself-audit/internal/audit"
)

func TestRedactor(t *testing.T) {
	extra, err := ParsePatterns(" ssn , Credit-Card,,")
	if err != nil {
		t.Fatal(err)
	}
	r := NewRedactor(extra)
	for name, want := range map[string]bool{
		"password": true, "password_hash": true, "PassWord": true, "reset_token": true, "tokens_used": true,
		"client_secret": true, "api_key": true, "apiKey": true, "X-API-KEY": true, "stripe_api-key": true,
		"ssn": true, "user_ssn": true, "creditcard": true, "credit_card_number": true,
		"email": false, "name": false, "api": false, "key": false, "passphrase": false, "": false,
	} {
		if got := r.Secret(name); got != want {
			t.Errorf("Secret(%q) = %v, want %v", name, got, want)
		}
	}
	if NewRedactor(nil).Secret("ssn") {
		t.Error("an extra pattern applies without being configured")
	}
	for _, bad := range []string{`a"b`, `back\slash`, strings.Repeat("x", 64), "tab\tname", "__"} {
		if _, err := ParsePatterns(bad); err == nil {
			t.Errorf("ParsePatterns(%q) accepted", bad)
		}
	}
}

// TestRedactionNested: secret members are redacted at any depth of a
// column's value, in objects inside arrays too, whatever their value's type.
func TestRedactionNested(t *testing.T) {
	c := &Change{Schema: "public", Table: "integrations", Op: OpInsert, New: map[string]any{
		"id":     json.Number("1"),
		"config": map[string]any{"name": "n", "auth": map[string]any{"token": map[string]any{"v": "deep"}, "user": "u"}},
		"hooks":  []any{map[string]any{"secret": "s1", "url": "u1"}, "plain", []any{map[string]any{"API_KEY": json.Number("5")}}},
		"notes":  "the word password in a value stays",
	}}
	in, err := c.Input(NewRedactor(nil))
	if err != nil {
		t.Fatal(err)
	}
	meta, _ := audit.CanonicalizeMetadata(in.Metadata)
	want := `{"new":{"config":{"auth":{"token":"[redacted]","user":"u"},"name":"n"},"hooks":[{"secret":"[redacted]","url":"u1"},"plain",[{"API_KEY":"[redacted]"}]],` +
		`"id":1,"notes":"the word password in a value stays"}}`
	if string(meta) != want {
		t.Errorf("metadata\n got %s\nwant %s", meta, want)
	}
}

// TestExactNumbers: numbers a double holds exactly stay numbers (in
// RFC 8785 form); others become strings of their digits.
func TestExactNumbers(t *testing.T) {
	for lit, want := range map[string]string{
		"1": "1", "129.90": "129.9", "0.1": "0.1", "-0": "0", "1e3": "1000", "9007199254740992": "9007199254740992",
		"9007199254740993":          `"9007199254740993"`,
		"12345678901234567890.0123": `"12345678901234567890.0123"`,
		"1e400":                     `"1e400"`,
		// Another decimal than 0.3 that reads as the same double.
		"0.30000000000000001": `"0.30000000000000001"`,
	} {
		got, err := canonicalOf(clean("", json.Number(lit), noRedaction))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s: %s, want %s", lit, got, want)
		}
	}
}

// TestFitMetadata: a row too large for one event keeps its small columns
// and replaces the largest by a marker with the size and digest of the
// value; the result is deterministic and within the limit.
func TestFitMetadata(t *testing.T) {
	big := strings.Repeat("a", 50<<10)
	bigger := strings.Repeat("b", 60<<10)
	row := func() map[string]any {
		return map[string]any{"id": json.Number("1"), "title": "t", "body": bigger, "draft": big, "n": json.Number("2")}
	}
	c := &Change{Schema: "public", Table: "posts", Op: OpInsert, New: row()}
	in, err := c.Input(NewRedactor(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Metadata) > audit.MaxMetadataBytes {
		t.Fatalf("metadata of %d bytes", len(in.Metadata))
	}
	var meta struct{ New map[string]any }
	if err := json.Unmarshal(in.Metadata, &meta); err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(bigger)
	sum := sha256.Sum256(raw)
	if want := fmt.Sprintf("[omitted: %d bytes, sha256:%s]", len(raw), hex.EncodeToString(sum[:])); meta.New["body"] != want {
		t.Errorf("body = %.80v, want %s", meta.New["body"], want)
	}
	if meta.New["draft"] != big || meta.New["title"] != "t" {
		t.Error("values that fit were replaced")
	}
	again, _ := (&Change{Schema: "public", Table: "posts", Op: OpInsert, New: row()}).Input(NewRedactor(nil))
	if string(again.Metadata) != string(in.Metadata) {
		t.Error("the same change fits differently")
	}
	if _, err := in.Validate("acme", "", testNow); err != nil {
		t.Errorf("the fitted event does not validate: %v", err)
	}

	// Many columns: past the values, whole members go.
	wide := map[string]any{}
	for i := 0; i < 3000; i++ {
		wide[fmt.Sprintf("c%04d", i)] = strings.Repeat("x", 40)
	}
	out, err := FitMetadata(map[string]any{"new": wide, "role": "user"})
	if err != nil || len(out) > audit.MaxMetadataBytes || !regexp.MustCompile(`^\{"new":"\[omitted: \d+ bytes, sha256:[0-9a-f]{64}\]","role":"user"\}$`).Match(out) {
		t.Errorf("wide row: %.200s, %v", out, err)
	}
}

func TestResourceIDTooLong(t *testing.T) {
	long := strings.Repeat("k", audit.MaxResourceIDLen+1)
	c := &Change{Schema: "public", Table: "t", Op: OpDelete, Old: map[string]any{"id": long}, Key: []any{long}, KeyColumns: []string{"id"}}
	in, err := c.Input(NewRedactor(nil))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(long))
	if in.ResourceID != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("resource id %q", in.ResourceID)
	}
}

func TestActionNames(t *testing.T) {
	for _, c := range []struct{ schema, table, op, want string }{
		{"public", "orders", OpInsert, "orders.insert"},
		{"auth", "users", OpManual, "auth.users.manual"},
		{"public", "Order-Lines_2", OpDelete, "Order-Lines_2.delete"},
		{"public", "my orders", OpInsert, ""},
		{"public", "ünicode", OpInsert, ""},
		{"public", strings.Repeat("t", 130), OpInsert, ""},
	} {
		got, err := Action(c.schema, c.table, c.op)
		if got != c.want || (c.want == "") != (err != nil) {
			t.Errorf("Action(%q, %q, %s) = %q, %v; want %q", c.schema, c.table, c.op, got, err, c.want)
		}
	}
	if err := CheckTable("np_nself_audit", "np_audit_events"); err == nil {
		t.Error("the plugin's own table may be captured")
	}
}

func TestCreateTriggers(t *testing.T) {
	req, err := CreateTriggers([]HasuraTable{{Schema: "public", Name: "orders"}, {Source: "crm", Schema: "auth", Name: "users"}},
		TriggerOptions{WebhookURL: "http://nself-audit:3843/api/v1/hooks/hasura", SecretEnv: "PLUGIN_INTERNAL_SECRET", KeyColumns: []string{"tenant", "no"}})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(req)
	want := `{"type":"bulk","args":[` +
		`{"type":"pg_create_event_trigger","args":{"delete":{"columns":"*"},"enable_manual":true,"headers":[{"name":"X-Plugin-Secret","value_from_env":"PLUGIN_INTERNAL_SECRET"}],"insert":{"columns":"*"},"name":"nself_audit_orders","replace":true,"retry_conf":{"interval_sec":60,"num_retries":60,"timeout_sec":60},"source":"default","table":{"name":"orders","schema":"public"},"update":{"columns":"*"},"webhook":"http://nself-audit:3843/api/v1/hooks/hasura?key=tenant%2Cno"}},` +
		`{"type":"pg_create_event_trigger","args":{"delete":{"columns":"*"},"enable_manual":true,"headers":[{"name":"X-Plugin-Secret","value_from_env":"PLUGIN_INTERNAL_SECRET"}],"insert":{"columns":"*"},"name":"nself_audit_auth_users","replace":true,"retry_conf":{"interval_sec":60,"num_retries":60,"timeout_sec":60},"source":"crm","table":{"name":"users","schema":"auth"},"update":{"columns":"*"},"webhook":"http://nself-audit:3843/api/v1/hooks/hasura?key=tenant%2Cno"}}]}`
	if string(raw) != want {
		t.Errorf("request\n got %s\nwant %s", raw, want)
	}
	if _, err := CreateTriggers([]HasuraTable{{Schema: "np_nself_audit", Name: "np_audit_events"}}, TriggerOptions{WebhookURL: "http://x/y", SecretEnv: "S"}); err == nil {
		t.Error("a trigger on the plugin's own events is made")
	}
	if _, err := CreateTriggers([]HasuraTable{{Schema: "public", Name: "t"}}, TriggerOptions{WebhookURL: "nself-audit:3843", SecretEnv: "S"}); err == nil {
		t.Error("a webhook URL without scheme is accepted")
	}
	long := TriggerName("reporting", strings.Repeat("quarterly_", 8))
	if len(long) > hasuraNameMax || !regexp.MustCompile(`^nself_audit_reporting_quarterly_[a-z_]*_[0-9a-f]{8}$`).MatchString(long) || long == TriggerName("reporting", strings.Repeat("quarterly_", 9)) {
		t.Errorf("long trigger name %q", long)
	}
}

func TestTrackedTables(t *testing.T) {
	exported := []byte(`{"resource_version":3,"metadata":null,"version":3,"sources":[
		{"name":"default","kind":"postgres","tables":[
			{"table":{"schema":"public","name":"orders"}},
			{"table":{"schema":"np_nself_audit","name":"np_audit_events"}},
			{"table":{"schema":"auth","name":"users"}},
			{"table":"legacy"}]},
		{"name":"mssql","kind":"mssql","tables":[{"table":{"schema":"dbo","name":"x"}}]}]}`)
	got, err := TrackedTables(exported)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tb := range got {
		names = append(names, tb.Source+":"+tb.Schema+"."+tb.Name)
	}
	if strings.Join(names, " ") != "default:auth.users default:public.legacy default:public.orders" {
		t.Errorf("tracked tables %v", names)
	}
	if _, err := TrackedTables([]byte(`[]`)); err == nil {
		t.Error("an array is read as metadata")
	}
}
