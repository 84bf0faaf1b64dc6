package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nself-org/nself-audit/client"
)

// postN records n events for account and returns their hashes by seq.
func postN(s *service, account string, n int) []string {
	s.t.Helper()
	c := s.client(account)
	hashes := []string{""}
	for i := 0; i < n; i++ {
		e, err := c.PostEvent(context.Background(), client.NewEvent{ActorID: fmt.Sprintf("u%d", i%3), Action: "doc.read",
			Metadata: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
		if err != nil {
			s.t.Fatal(err)
		}
		hashes = append(hashes, e.Hash)
	}
	return hashes
}

func TestVerifyEndpoint(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store, withJWT(`{"type":"HS256","key":"`+hsKey+`"}`))
		hashes := postN(s, "acme", 12)
		postN(s, "globex", 3)

		r := s.get("/api/v1/verify", pluginHeaders("acme"))
		head, _ := r.body["head"].(map[string]any)
		if r.body["ok"] != true || r.body["checked"] != 12.0 || r.body["first_broken_seq"] != nil ||
			head["seq"] != 12.0 || head["hash"] != hashes[12] {
			t.Fatalf("verify: %s", r.raw)
		}
		r = s.get("/api/v1/verify?from_seq=5&to_seq=9", pluginHeaders("acme"))
		if head, _ := r.body["head"].(map[string]any); r.body["ok"] != true || r.body["checked"] != 5.0 || head["seq"] != 9.0 {
			t.Fatalf("verify 5..9: %s", r.raw)
		}
		if r := s.get("/api/v1/verify?from_seq=50", pluginHeaders("acme")); r.body["ok"] != true || r.body["checked"] != 0.0 ||
			r.body["head"].(map[string]any)["hash"] != hashes[12] {
			t.Fatalf("verify past the head: %s", r.raw)
		}
		// Verifying while events are written never raises a false alarm.
		stop := make(chan struct{})
		writing := make(chan struct{})
		go func() {
			defer close(writing)
			for {
				select {
				case <-stop:
					return
				default:
					s.do("POST", "/api/v1/events", pluginHeaders("acme"), `{"actor_id":"w","action":"doc.write"}`)
				}
			}
		}()
		for i := 0; i < 30; i++ {
			if r := s.get("/api/v1/verify", pluginHeaders("acme")); r.body["ok"] != true {
				t.Errorf("verify during writes: %s", r.raw)
				break
			}
		}
		close(stop)
		<-writing
		if r := s.get("/api/v1/verify", pluginHeaders("initech")); r.body["ok"] != true || r.body["checked"] != 0.0 {
			t.Fatalf("verify of an empty account: %s", r.raw)
		}
		admin := hsToken(t, claims{user: "root", role: "admin", account: "globex", allowed: []string{"admin"}})
		if r := s.get("/api/v1/verify", bearer(admin)); r.body["checked"] != 3.0 {
			t.Fatalf("admin JWT verifies its own account: %s", r.raw)
		}
		user := hsToken(t, claims{user: "u1", role: "user", account: "acme", allowed: []string{"user"}})
		for _, path := range []string{"/api/v1/verify", "/api/v1/events/export"} {
			if r := s.do("GET", path, bearer(user), ""); r.status != 403 {
				t.Errorf("%s as a user role: %d %s", path, r.status, r.raw)
			}
		}
		for _, q := range []string{"from_seq=0", "to_seq=x", "from_seq=5&to_seq=2", "colour=red", "from_seq=1&from_seq=2"} {
			if r := s.do("GET", "/api/v1/verify?"+q, pluginHeaders("acme"), ""); r.status != 400 {
				t.Errorf("verify?%s: %d %s", q, r.status, r.raw)
			}
		}
	})
}

// TestTamperDetected: a superuser who disables the append-only trigger
// edits, deletes, swaps or inserts rows; verification names the first
// broken seq.
func TestTamperDetected(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, sql string
		broken    float64
	}{
		{"edit a field", `UPDATE np_nself_audit.np_audit_events SET action = 'doc.write' WHERE seq = 4`, 4},
		{"edit metadata", `UPDATE np_nself_audit.np_audit_events SET metadata = '{"i": 99}' WHERE seq = 6`, 6},
		{"delete a row", `DELETE FROM np_nself_audit.np_audit_events WHERE seq = 3`, 3},
		{"swap two rows", `UPDATE np_nself_audit.np_audit_events SET seq = CASE seq WHEN 5 THEN 6 ELSE 5 END WHERE seq IN (5, 6)`, 5},
		{"delete the newest rows", `DELETE FROM np_nself_audit.np_audit_events WHERE seq >= 9`, 9},
		{"insert a row", `INSERT INTO np_nself_audit.np_audit_events SELECT gen_random_uuid(), source_account_id, 8, occurred_at,
			recorded_at, actor_id, actor_type, 'doc.forged', resource_type, resource_id, outcome, severity, ip_address, user_agent,
			request_id, source, metadata, prev_hash, hash FROM np_nself_audit.np_audit_events WHERE seq = 7;
			UPDATE np_nself_audit.np_audit_events SET seq = seq + 1 WHERE seq >= 8 AND action <> 'doc.forged'`, 8},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := start(t, "postgres")
			postN(s, "acme", 10)
			// The triggers fire even in replica mode; a superuser has to
			// disable them explicitly, on the partition that holds the rows.
			part := "np_nself_audit.np_audit_events_p" + time.Now().UTC().Format("200601")
			superuserExec(t, s.dbURL, `ALTER TABLE `+part+` DISABLE TRIGGER trg_audit_immutable; `+c.sql+
				`; ALTER TABLE `+part+` ENABLE ALWAYS TRIGGER trg_audit_immutable`)
			r := s.get("/api/v1/verify", pluginHeaders("acme"))
			if r.body["ok"] != false || r.body["first_broken_seq"] != c.broken || r.body["reason"] == "" {
				t.Fatalf("after %s: %s; want first_broken_seq %v", c.name, r.raw, c.broken)
			}
		})
	}
}

func TestExportAndOfflineVerify(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		postN(s, "acme", 25)
		postN(s, "globex", 2)
		r := s.do("GET", "/api/v1/events/export?format=ndjson", pluginHeaders("acme"), "")
		if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/x-ndjson") {
			t.Fatalf("export: %d %s", r.status, r.header)
		}
		lines := strings.Split(strings.TrimSpace(string(r.raw)), "\n")
		if len(lines) != 25 || !strings.Contains(lines[0], `"seq":1,`) || !strings.Contains(lines[24], `"seq":25,`) {
			t.Fatalf("export has %d lines: %.200s", len(lines), r.raw)
		}
		dir := t.TempDir()
		verify := func(name string, lines []string) (int, string) {
			path := filepath.Join(dir, name)
			os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
			var out, errOut bytes.Buffer
			code := verifyFile([]string{"--file", path, "--partial"}, &out, &errOut)
			return code, out.String() + errOut.String()
		}
		if code, out := verify("good.ndjson", lines); code != 0 || !strings.Contains(out, "ok: account acme: 25 events verify") {
			t.Fatalf("intact export: %d %s", code, out)
		}
		edited := append([]string(nil), lines...)
		edited[6] = strings.Replace(edited[6], `"action":"doc.read"`, `"action":"doc.wipe"`, 1)
		withoutMiddle := append(append([]string(nil), lines[:10]...), lines[11:]...)
		reordered := append([]string(nil), lines...)
		reordered[3], reordered[4] = reordered[4], reordered[3]
		for name, c := range map[string]struct {
			lines []string
			want  string
		}{
			"edited":       {edited, "first bad seq 7"},
			"truncated":    {withoutMiddle, "first bad seq 11"},
			"reordered":    {reordered, "first bad seq 4"},
			"garbage":      {append([]string{"{not json"}, lines...), "line 1"},
			"two readings": {append([]string{strings.Replace(lines[0], `"action":"doc.read"`, `"action":"doc.read","Action":"doc.wipe"`, 1)}, lines[1:]...), "Action: unknown field"},
			"duplicate":    {append([]string{strings.Replace(lines[0], `"action":"doc.read"`, `"action":"doc.wipe","action":"doc.read"`, 1)}, lines[1:]...), "action: given more than once"},
		} {
			if code, out := verify(name+".ndjson", c.lines); code != 1 || !strings.Contains(out, c.want) {
				t.Errorf("%s export: exit %d, %q; want exit 1 naming %q", name, code, out, c.want)
			}
		}
		// A range export verifies from its first event.
		r = s.do("GET", "/api/v1/events/export?from_seq=20&to_seq=22", pluginHeaders("acme"), "")
		part := strings.Split(strings.TrimSpace(string(r.raw)), "\n")
		if code, out := verify("part.ndjson", part); code != 0 || len(part) != 3 || !strings.Contains(out, "seq 20 to 22") {
			t.Fatalf("range export: %d %s", code, out)
		}
		if r := s.do("GET", "/api/v1/events/export?format=xml", pluginHeaders("acme"), ""); r.status != 400 {
			t.Errorf("format=xml: %d", r.status)
		}
	})
}

func TestVerifyUsage(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	if code := verifyFile(nil, &out, &errOut); code != 2 {
		t.Errorf("no --file: exit %d", code)
	}
	if code := verifyFile([]string{"--file", "/nonexistent"}, &out, &errOut); code != 2 {
		t.Errorf("missing file: exit %d", code)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, nil, 0o600)
	if code := verifyFile([]string{"--file", empty}, &out, &errOut); code != 1 {
		t.Errorf("empty file: exit %d", code)
	}
}
