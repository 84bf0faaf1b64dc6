package capture

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"

	"github.com/nself-org/nself-audit/internal/audit"
)

// HasuraTable is a table as Hasura's metadata names it.
type HasuraTable struct {
	Source string `json:"-"`
	Schema string `json:"schema"`
	Name   string `json:"name"`
}

// TriggerOptions shape the event triggers `nself-audit capture hasura`
// defines.
type TriggerOptions struct {
	WebhookURL string   // the hook route as Hasura reaches it
	SecretEnv  string   // the variable of Hasura's environment holding the plugin token
	KeyColumns []string // ?key= on the webhook; none: the route's default (id)
}

// Hasura retries a failed delivery NumRetries times, IntervalSec apart:
// about an hour for the service to come back before Hasura gives up on an
// event (pg_redeliver_event sends it again later).
const (
	hookRetries     = 60
	hookIntervalSec = 60
	hookTimeoutSec  = 60
)

// ExcludedSchema reports whether tables of schema are never captured: the
// plugin's own (capturing its events would feed itself) and the catalogs.
func ExcludedSchema(schema string) bool {
	switch schema {
	case "np_nself_audit", "hdb_catalog", "pg_catalog", "information_schema":
		return true
	}
	return strings.HasPrefix(schema, "pg_toast") || strings.HasPrefix(schema, "pg_temp")
}

// CheckTable refuses a table that cannot be captured: an excluded schema,
// or names that cannot form an action.
func CheckTable(schema, table string) error {
	if ExcludedSchema(schema) {
		return audit.Errorf(audit.EINVALID, "table %s.%s: tables of schema %s are never captured", schema, table, schema)
	}
	_, err := Action(schema, table, OpInsert)
	return err
}

var triggerNameUnsafe = regexp.MustCompile(`[^A-Za-z0-9_]`)

// hasuraNameMax keeps trigger names short enough for the SQL triggers
// Hasura derives from them (it appends the operation; PostgreSQL cuts
// identifiers at 63 bytes).
const hasuraNameMax = 42

// TriggerName is the event trigger's name for a table:
// nself_audit_<table>, or nself_audit_<schema>_<table> outside public,
// with other characters than letters, digits and _ as _, and a digest
// ending names that would be too long.
func TriggerName(schema, table string) string {
	name := "nself_audit_" + triggerNameUnsafe.ReplaceAllString(strings.ReplaceAll(QualifiedName(schema, table), ".", "_"), "_")
	if len(name) > hasuraNameMax {
		sum := sha256.Sum256([]byte(schema + "." + table))
		name = name[:hasuraNameMax-9] + "_" + hex.EncodeToString(sum[:4])
	}
	return name
}

// MetadataRequest is one request body of Hasura's metadata API.
type MetadataRequest struct {
	Type string `json:"type"`
	Args any    `json:"args"`
}

// CreateTriggers returns the metadata API request that creates (or
// replaces) an event trigger on each table, pointing at the hook route
// with the plugin token header taken from Hasura's environment: a "bulk"
// of pg_create_event_trigger requests, in the order of the tables.
func CreateTriggers(tables []HasuraTable, opt TriggerOptions) (*MetadataRequest, error) {
	if len(tables) == 0 {
		return nil, fmt.Errorf("no tables to capture")
	}
	u, err := url.Parse(opt.WebhookURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook URL %q: want an http:// or https:// URL", opt.WebhookURL)
	}
	if len(opt.KeyColumns) > 0 {
		q := u.Query()
		q.Set("key", strings.Join(opt.KeyColumns, ","))
		u.RawQuery = q.Encode()
	}
	var args []MetadataRequest
	seen := map[string]bool{}
	for _, t := range tables {
		if err := CheckTable(t.Schema, t.Name); err != nil {
			return nil, fmt.Errorf("%s", audit.ErrorMessage(err))
		}
		name := TriggerName(t.Schema, t.Name)
		if seen[t.Source+"\x00"+name] {
			continue
		}
		seen[t.Source+"\x00"+name] = true
		source := t.Source
		if source == "" {
			source = "default"
		}
		args = append(args, MetadataRequest{Type: "pg_create_event_trigger", Args: map[string]any{
			"name":          name,
			"source":        source,
			"table":         map[string]string{"schema": t.Schema, "name": t.Name},
			"webhook":       u.String(),
			"insert":        map[string]any{"columns": "*"},
			"update":        map[string]any{"columns": "*"},
			"delete":        map[string]any{"columns": "*"},
			"enable_manual": true,
			"headers":       []map[string]string{{"name": "X-Plugin-Secret", "value_from_env": opt.SecretEnv}},
			"retry_conf":    map[string]int{"num_retries": hookRetries, "interval_sec": hookIntervalSec, "timeout_sec": hookTimeoutSec},
			"replace":       true,
		}})
	}
	return &MetadataRequest{Type: "bulk", Args: args}, nil
}

// TrackedTables reads the PostgreSQL tables that Hasura tracks from the
// answer to {"type":"export_metadata","args":{}} (metadata version 3:
// sources[].tables[].table), leaving out the excluded schemas, sorted by
// source, schema and name.
func TrackedTables(exported []byte) ([]HasuraTable, error) {
	var md struct {
		Sources []struct {
			Name   string `json:"name"`
			Kind   string `json:"kind"`
			Tables []struct {
				Table json.RawMessage `json:"table"`
			} `json:"tables"`
		} `json:"sources"`
	}
	if err := json.Unmarshal(exported, &md); err != nil {
		return nil, fmt.Errorf("Hasura's metadata is not the JSON expected (version 3, with sources): %v", err)
	}
	var out []HasuraTable
	for _, s := range md.Sources {
		if s.Kind != "" && s.Kind != "postgres" {
			continue
		}
		for _, t := range s.Tables {
			var qt HasuraTable
			var plain string
			if json.Unmarshal(t.Table, &plain) == nil { // a bare name: schema public
				qt = HasuraTable{Schema: "public", Name: plain}
			} else if err := json.Unmarshal(t.Table, &qt); err != nil {
				return nil, fmt.Errorf("Hasura's metadata names a table as %s", t.Table)
			}
			if qt.Schema == "" {
				qt.Schema = "public"
			}
			qt.Source = s.Name
			if qt.Name == "" || ExcludedSchema(qt.Schema) {
				continue
			}
			out = append(out, qt)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Source != b.Source {
			return a.Source < b.Source
		}
		if a.Schema != b.Schema {
			return a.Schema < b.Schema
		}
		return a.Name < b.Name
	})
	return out, nil
}

// ParseTableName reads schema.table (public when there is no schema): the
// first dot separates them.
func ParseTableName(s string) (schema, table string, err error) {
	schema, table, ok := strings.Cut(s, ".")
	if !ok {
		schema, table = "public", s
	}
	if schema == "" || table == "" {
		return "", "", fmt.Errorf("%q: want schema.table or table", s)
	}
	return schema, table, nil
}
