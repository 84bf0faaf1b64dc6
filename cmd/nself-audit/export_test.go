package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nself-org/nself-audit/internal/audit"
)

// exportColumns is the CSV header of the route contract.
var exportColumns = []string{"id", "source_account_id", "seq", "occurred_at", "recorded_at", "actor_id", "actor_type",
	"action", "resource_type", "resource_id", "outcome", "severity", "ip_address", "user_agent", "request_id", "source",
	"metadata", "prev_hash", "hash"}

// postExportEvents records events with text that CSV must quote (commas,
// quotes, newlines), non-ASCII text, and every optional field, and returns
// their ids in seq order.
func postExportEvents(s *service) []string {
	bodies := []string{
		`{"actor_id":"alice","action":"user.login","ip_address":"203.0.113.7","user_agent":"Mozilla/5.0 (X11, \"Linux\")\nnext line","request_id":"req-1","source":"auth","metadata":{"note":"a, \"quoted\"\nsecond line","ünï":"日本語 ✓","n":[1,2.5,{"x":null}]}}`,
		`{"actor_id":"bob","action":"doc.delete","resource_type":"doc","resource_id":"d,9","outcome":"denied","severity":"critical","metadata":{"why":"=SUM(A1) \"x\" & <b>"}}`,
		`{"actor_type":"system","action":"backup.run","source":"cron"}`,
		`{"actor_id":"alice","action":"user.logout","resource_type":"session","resource_id":"s1"}`,
		`{"actor_id":"ça-va","action":"doc.read","metadata":{"emoji":"🙂","tab":"a\tb","cr":"x\ry"}}`,
		`{"actor_id":"alice","action":"user.mfa.enable","outcome":"failure","severity":"warning"}`,
		`{"actor_id":"bob","action":"users.list"}`,
		`{"actor_id":"alice","action":"doc.read","resource_type":"doc","resource_id":"d1"}`,
	}
	var ids []string
	for _, b := range bodies {
		ids = append(ids, s.post("acme", b)["id"].(string))
	}
	s.post("globex", bodies[0])
	return ids
}

// byID returns GET /api/v1/events/{id}: the raw body and its members.
func byID(s *service, account, id string) ([]byte, map[string]json.RawMessage) {
	r := s.get("/api/v1/events/"+id, pluginHeaders(account))
	var m map[string]json.RawMessage
	if err := json.Unmarshal(r.raw, &m); err != nil {
		s.t.Fatal(err)
	}
	return r.raw, m
}

// exportCSV fetches a CSV export and parses it with encoding/csv.
func exportCSV(t *testing.T, s *service, query string) [][]string {
	t.Helper()
	r := s.do("GET", "/api/v1/events/export?format=csv"+query, pluginHeaders("acme"), "")
	if r.status != 200 || r.header.Get("Content-Type") != "text/csv; charset=utf-8" ||
		r.header.Get("Content-Disposition") != `attachment; filename="nself-audit-acme.csv"` {
		t.Fatalf("csv export%s: %d %v %s", query, r.status, r.header, r.raw)
	}
	rows, err := csv.NewReader(bytes.NewReader(r.raw)).ReadAll()
	if err != nil {
		t.Fatalf("csv export%s does not parse: %v\n%s", query, err, r.raw)
	}
	if len(rows) == 0 || !slices.Equal(rows[0], exportColumns) {
		t.Fatalf("csv header %v, want %v", rows, exportColumns)
	}
	return rows[1:]
}

// exportNDJSON fetches an NDJSON export and returns its raw body.
func exportNDJSON(t *testing.T, s *service, query string) []byte {
	t.Helper()
	r := s.do("GET", "/api/v1/events/export?"+query, pluginHeaders("acme"), "")
	if r.status != 200 || r.header.Get("Content-Type") != "application/x-ndjson" ||
		r.header.Get("Content-Disposition") != `attachment; filename="nself-audit-acme.ndjson"` {
		t.Fatalf("ndjson export?%s: %d %v %s", query, r.status, r.header, r.raw)
	}
	return r.raw
}

// ndjsonIDs returns the ids of an NDJSON export's lines, checking seq order.
func ndjsonIDs(t *testing.T, raw []byte) []string {
	t.Helper()
	var ids []string
	prev := int64(0)
	for _, line := range strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n") {
		if line == "" {
			continue
		}
		var e struct {
			ID  string `json:"id"`
			Seq int64  `json:"seq"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.Seq <= prev {
			t.Fatalf("line %q: %v, or not after seq %d", line, err, prev)
		}
		prev = e.Seq
		ids = append(ids, e.ID)
	}
	return ids
}

// TestExportCSV: the CSV export holds a header and one row per event in
// seq order whose fields equal the stored event's, as GET
// /api/v1/events/{id} returns it, field by field.
func TestExportCSV(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		ids := postExportEvents(s)
		rows := exportCSV(t, s, "")
		if len(rows) != len(ids) {
			t.Fatalf("%d rows, want %d", len(rows), len(ids))
		}
		for i, row := range rows {
			if row[0] != ids[i] || row[2] != strconv.Itoa(i+1) {
				t.Fatalf("row %d is %s seq %s, want %s seq %d", i, row[0], row[2], ids[i], i+1)
			}
			_, want := byID(s, "acme", ids[i])
			for c, name := range exportColumns {
				raw := want[name]
				var v string
				switch name {
				case "seq": // a number: its JSON text
					v = string(raw)
				case "metadata": // the canonical text, which the JSON form escapes <, > and & in
					c, err := audit.Canonicalize(raw)
					if err != nil {
						t.Fatal(err)
					}
					v = string(c)
				default:
					if err := json.Unmarshal(raw, &v); err != nil {
						t.Fatalf("%s: %v", name, err)
					}
				}
				if row[c] != v {
					t.Errorf("row %d %s: %q, want %q", i, name, row[c], v)
				}
			}
		}
		if !strings.Contains(rows[0][16], "日本語 ✓") || !strings.Contains(rows[0][13], "\n") || !strings.Contains(rows[1][9], ",") ||
			!strings.Contains(rows[1][16], `\"x\" & <b>`) {
			t.Errorf("the hard cases were not exercised: %q", rows[:2])
		}
		// Filters apply.
		got := exportCSV(t, s, "&action=user.*&actor_id=alice")
		var seqs []string
		for _, row := range got {
			seqs = append(seqs, row[2])
		}
		if strings.Join(seqs, ",") != "1,4,6" {
			t.Errorf("filtered csv: seqs %v, want 1,4,6", seqs)
		}
		if got := exportCSV(t, s, "&actor_id=nobody"); len(got) != 0 {
			t.Errorf("csv of no events: %v", got)
		}
	})
}

// TestExportFilters: the list filters narrow both formats alike, with
// from_seq and to_seq; an unfiltered NDJSON export is the events as GET
// /api/v1/events/{id} returns them, byte for byte, and so is one through
// a filter that matches every event.
func TestExportFilters(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		ids := postExportEvents(s)
		var want bytes.Buffer
		for _, id := range ids {
			raw, _ := byID(s, "acme", id)
			want.Write(raw)
		}
		all := exportNDJSON(t, s, "")
		if !bytes.Equal(all, want.Bytes()) {
			t.Fatalf("unfiltered export:\n%s\nwant:\n%s", all, want.Bytes())
		}
		if got := exportNDJSON(t, s, "format=ndjson&since=1970-01-01T00:00:00Z"); !bytes.Equal(got, all) {
			t.Fatalf("export through a filter matching everything differs:\n%s", got)
		}
		for _, c := range []struct {
			query string
			want  []int // positions in ids
		}{
			{"action=user.*", []int{0, 3, 5}},
			{"actor_id=bob", []int{1, 6}},
			{"resource_type=doc&resource_id=d1", []int{7}},
			{"outcome=denied&severity=critical", []int{1}},
			{"actor_type=system&source=cron", []int{2}},
			{"actor_id=alice&from_seq=3&to_seq=7", []int{3, 5}},
			{"action=doc.read&from_seq=6", []int{7}},
			{"until=1970-01-02T00:00:00Z", nil},
		} {
			var wantIDs []string
			for _, i := range c.want {
				wantIDs = append(wantIDs, ids[i])
			}
			if got := ndjsonIDs(t, exportNDJSON(t, s, c.query)); !slices.Equal(got, wantIDs) {
				t.Errorf("ndjson %s: %v, want %v", c.query, got, wantIDs)
			}
			var csvIDs []string
			for _, row := range exportCSV(t, s, "&"+c.query) {
				csvIDs = append(csvIDs, row[0])
			}
			if !slices.Equal(csvIDs, wantIDs) {
				t.Errorf("csv %s: %v, want %v", c.query, csvIDs, wantIDs)
			}
		}
		for _, c := range []struct{ query, want string }{
			{"format=xml", "format: must be ndjson or csv"},
			{"format=CSV", "format"},
			{"format=csv&format=ndjson", "format: given more than once"},
			{"limit=5", "limit: unknown query parameter"},
			{"cursor=abc", "cursor: unknown"},
			{"actor_type=robot&format=csv", "actor_type: must be one of"},
			{"format=csv&from_seq=0", "from_seq"},
			{"format=csv&from_seq=5&to_seq=2", "from_seq"},
		} {
			if r := s.do("GET", "/api/v1/events/export?"+c.query, pluginHeaders("acme"), ""); r.status != 400 ||
				r.errorCode() != "invalid_request" || !strings.Contains(r.errorMessage(), c.want) {
				t.Errorf("export?%s: %d %s; want 400 naming %q", c.query, r.status, r.raw, c.want)
			}
		}
		if r := s.do("GET", "/api/v1/events/export?format=csv", pluginHeaders("initech"), ""); r.status != 200 ||
			string(r.raw) != strings.Join(exportColumns, ",")+"\n" {
			t.Errorf("csv of an empty account: %d %q", r.status, r.raw)
		}
	})
}
