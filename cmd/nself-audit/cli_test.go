package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nself-org/nself-audit/client"
)

// cliRun is one run of the real binary as a client verb.
type cliRun struct {
	code           int
	stdout, stderr string
}

// runCLI runs the binary with args against the service at baseURL, with
// the plugin token in PLUGIN_INTERNAL_SECRET and env added, in dir ("":
// a temporary folder).
func runCLI(t *testing.T, baseURL, dir string, env []string, args ...string) cliRun {
	t.Helper()
	cmd := cliCommand(t, baseURL, dir, env, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return cliRun{code, out.String(), errOut.String()}
}

func cliCommand(t *testing.T, baseURL, dir string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, bin, args...)
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "NSELF_AUDIT_URL", "PLUGIN_INTERNAL_SECRET", "PLUGIN_SECRET", "PLUGIN_INTERNAL_SECRET_FILE", "PLUGIN_SECRET_FILE":
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, "NSELF_AUDIT_URL="+baseURL, "PLUGIN_INTERNAL_SECRET="+testSecret)
	cmd.Env = append(cmd.Env, env...)
	if dir == "" {
		dir = t.TempDir()
	}
	cmd.Dir = dir
	return cmd
}

// must fails the test unless the run exited with code.
func (r cliRun) must(t *testing.T, code int, what string) cliRun {
	t.Helper()
	if r.code != code {
		t.Fatalf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", what, r.code, code, r.stdout, r.stderr)
	}
	return r
}

// seedCLI posts n events to account through the client: actors user-0..2,
// actions doc.read and doc.write, one system backup every 10th.
func seedCLI(t *testing.T, s *service, account string, n int) {
	t.Helper()
	c := s.client(account)
	var batch []client.NewEvent
	for i := range n {
		e := client.NewEvent{ActorID: fmt.Sprintf("user-%d", i%3), Action: "doc.read", ResourceType: "doc",
			ResourceID: fmt.Sprintf("d%d", i), OccurredAt: time.Date(2026, 11, 1+i%20, 10, 0, i%60, 0, time.UTC),
			Metadata: json.RawMessage(fmt.Sprintf(`{"i":%d,"note":"line\nbreak, \"quoted\" <&>"}`, i))}
		switch {
		case i%10 == 9:
			e = client.NewEvent{ActorType: "system", Action: "backup.completed", Severity: "warning", UserAgent: "cron,\r\n\"1\""}
		case i%2 == 1:
			e.Action, e.Outcome = "doc.write", "denied"
		}
		batch = append(batch, e)
		if len(batch) == 1000 || i == n-1 {
			if _, err := c.PostBatch(context.Background(), batch, ""); err != nil {
				t.Fatal(err)
			}
			batch = nil
		}
	}
}

// TestCLIReadVerbs runs events list and get, stats and verify as the real
// binary against the service on both stores: JSON by default when stdout is
// a pipe, tables with --table, filters, paging, --account, exit codes and
// --help.
func TestCLIReadVerbs(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		seedCLI(t, s, "acme", 7)
		h := pluginHeaders("acme")
		acme := []string{"--account", "acme"}
		cli := func(code int, args ...string) cliRun {
			t.Helper()
			return runCLI(t, s.url, "", nil, args...).must(t, code, strings.Join(args, " "))
		}

		// events list: NDJSON, each line as the route's event.
		r := cli(0, append([]string{"events", "list"}, acme...)...)
		want := s.get("/api/v1/events", h)
		// The route's events, re-encoded in the client's form, are the lines.
		var wantPage client.EventPage
		json.Unmarshal(want.raw, &wantPage)
		var b strings.Builder
		for _, e := range wantPage.Events {
			b.WriteString(mustJSON(t, e) + "\n")
		}
		if r.stdout != b.String() || len(wantPage.Events) != 7 {
			t.Fatalf("events list:\n%s\nwant:\n%s", r.stdout, b.String())
		}
		r = cli(0, "events", "list", "--account", "acme", "--action", "doc.*", "--actor_id", "user-1", "--sort", "asc")
		if got := seqsOf(t, r.stdout); got != "[2 5]" {
			t.Fatalf("filtered list: seqs %s\n%s", got, r.stdout)
		}
		r = cli(0, "events", "list", "--account", "acme", "--limit", "3", "--sort", "asc")
		if got := seqsOf(t, r.stdout); got != "[1 2 3]" || !strings.Contains(r.stderr, "more: --cursor ") {
			t.Fatalf("one page of 3: %s, stderr %q", got, r.stderr)
		}
		cursor := strings.Fields(strings.TrimPrefix(r.stderr, "more: --cursor "))[0]
		r = cli(0, "events", "list", "--account", "acme", "--limit", "3", "--sort", "asc", "--cursor", cursor)
		if got := seqsOf(t, r.stdout); got != "[4 5 6]" {
			t.Fatalf("second page: %s", got)
		}
		r = cli(0, "events", "list", "--all", "--limit", "2", "--account", "acme", "--severity", "info")
		if got := seqsOf(t, r.stdout); got != "[7 6 5 4 3 2 1]" {
			t.Fatalf("--all: %s", got)
		}
		if r.stderr != "" {
			t.Fatalf("--all printed a cursor: %q", r.stderr)
		}
		r = cli(0, "events", "list", "--table", "--account", "acme", "--sort", "asc")
		tableLines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(tableLines) != 8 || strings.Join(strings.Fields(tableLines[0]), " ") != "SEQ OCCURRED_AT ACTOR ACTION RESOURCE OUTCOME SEVERITY ID" ||
			strings.Join(strings.Fields(tableLines[1]), " ") != "1 2026-11-01 10:00:00.000 user-0 doc.read doc:d0 success info "+wantPage.Events[6].ID ||
			!strings.Contains(tableLines[2], "denied") || strings.Index(tableLines[1], "user-0") != strings.Index(tableLines[0], "ACTOR") {
			t.Fatalf("table:\n%s", r.stdout)
		}
		if r := cli(0, "events", "list", "--table"); strings.TrimSpace(r.stdout) != "no events" {
			t.Fatalf("empty table of account primary: %q", r.stdout)
		}
		if r := cli(0, "events", "list"); r.stdout != "" {
			t.Fatalf("empty list of account primary: %q", r.stdout)
		}

		// events get
		id := wantPage.Events[0].ID
		r = cli(0, "events", "get", id, "--account", "acme")
		if raw := s.get("/api/v1/events/"+id, h).raw; r.stdout != string(raw) {
			t.Fatalf("events get:\n%s\nwant\n%s", r.stdout, raw)
		}
		r = cli(0, "events", "get", "--table", "--account", "acme", id)
		if !strings.Contains(r.stdout, "hash ") || !strings.Contains(r.stdout, id) {
			t.Fatalf("events get --table:\n%s", r.stdout)
		}
		r = cli(1, "events", "get", id) // another account: not found
		if !strings.Contains(r.stderr, "not found (404 not_found, request ") {
			t.Fatalf("events get of another account: %q", r.stderr)
		}

		// stats
		r = cli(0, "stats", "--account", "acme", "--interval", "hour")
		if raw := s.get("/api/v1/stats?interval=hour", h).raw; r.stdout != string(raw) {
			t.Fatalf("stats:\n%s\nwant\n%s", r.stdout, raw)
		}
		r = cli(0, "stats", "--account", "acme", "--table", "--outcome", "denied")
		if !regexp.MustCompile(`(?m)^events +3$`).MatchString(r.stdout) || !strings.Contains(r.stdout, "  doc.write  3\n") {
			t.Fatalf("stats --table:\n%s", r.stdout)
		}

		// verify against the server
		r = cli(0, "verify", "--account", "acme")
		var vr client.VerifyResult
		if err := json.Unmarshal([]byte(r.stdout), &vr); err != nil || !vr.OK || vr.Checked != 7 {
			t.Fatalf("verify: %s %v", r.stdout, err)
		}
		r = cli(0, "verify", "--account", "acme", "--table", "--from-seq", "2", "--to-seq", "4")
		if !strings.HasPrefix(r.stdout, "ok: account acme: 3 events verify on the server; head seq 4") {
			t.Fatalf("verify --table: %s", r.stdout)
		}
		if store == "postgres" {
			part := "np_nself_audit.np_audit_events_p" + time.Now().UTC().Format("200601")
			superuserExec(t, s.dbURL, `ALTER TABLE `+part+` DISABLE TRIGGER trg_audit_immutable; `+
				`UPDATE np_nself_audit.np_audit_events SET action = 'doc.wipe' WHERE seq = 4 AND source_account_id = 'acme'`+
				`; ALTER TABLE `+part+` ENABLE ALWAYS TRIGGER trg_audit_immutable`)
			r = cli(1, "verify", "--account", "acme", "--table")
			if !strings.HasPrefix(r.stdout, "FAIL: account acme: first bad seq 4: hash does not match") {
				t.Fatalf("verify of a tampered chain: %s", r.stdout)
			}
			r = cli(1, "verify", "--account", "acme", "--json")
			if !strings.Contains(r.stdout, `"first_broken_seq":4`) {
				t.Fatalf("verify --json of a tampered chain: %s", r.stdout)
			}
		}
	})
}

// TestCLIUsage: --help on every verb and sub-verb, usage errors exit 2,
// failures exit 1, and the token and URL come from the environment.
func TestCLIUsage(t *testing.T) {
	t.Parallel()
	s := start(t, "sqlite")
	for _, args := range [][]string{
		{"events", "--help"}, {"events", "list", "--help"}, {"events", "get", "-h"}, {"events", "tail", "--help"},
		{"stats", "--help"}, {"export", "--help"}, {"import", "--help"}, {"verify", "--help"}, {"help"},
	} {
		r := runCLI(t, s.url, "", nil, args...).must(t, 0, strings.Join(args, " "))
		if !strings.Contains(r.stdout, "usage: nself-audit") && !strings.Contains(r.stdout, "Usage:") {
			t.Fatalf("%v: no usage on stdout: %q", args, r.stdout)
		}
		if args[0] != "help" && args[len(args)-2] != "events" && !strings.Contains(r.stdout, "usage: nself-audit "+args[0]) {
			t.Fatalf("%v: usage of another verb: %q", args, r.stdout)
		}
	}
	for _, c := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"events"}, nil, "usage: nself-audit events"},
		{[]string{"events", "lst"}, nil, `unknown verb "lst"`},
		{[]string{"events", "list", "--limit", "5000"}, nil, "--limit: must be from 1 to 1000"},
		{[]string{"events", "list", "--colour"}, nil, "flag provided but not defined: -colour"},
		{[]string{"events", "list", "extra"}, nil, `unexpected argument "extra"`},
		{[]string{"events", "list", "--json", "--table"}, nil, "choose one"},
		{[]string{"events", "get"}, nil, "want one event id"},
		{[]string{"events", "tail", "--after", "x"}, nil, "--after: must be a seq"},
		{[]string{"stats", "--since", "yesterday"}, nil, "--since: not an RFC 3339 time"},
		{[]string{"export"}, nil, "--output: required"},
		{[]string{"export", "--output", "x.ndjson", "--format", "xml"}, nil, "--format: must be ndjson or csv"},
		{[]string{"export", "--output", "x", "--from-seq", "5", "--to-seq", "2"}, nil, "--from-seq: must not be greater"},
		{[]string{"import"}, nil, "--file: required"},
		{[]string{"import", "--file", "/nonexistent"}, nil, "--file: open /nonexistent"},
		{[]string{"verify", "--from-seq", "-1"}, nil, "must be 1 or more"},
		{[]string{"stats"}, []string{"PLUGIN_INTERNAL_SECRET="}, "no plugin token: set PLUGIN_INTERNAL_SECRET"},
		{[]string{"stats"}, []string{"PLUGIN_INTERNAL_SECRET=short"}, "PLUGIN_INTERNAL_SECRET: must be at least 16"},
		{[]string{"stats"}, []string{"NSELF_AUDIT_URL=ftp://x"}, "--url / NSELF_AUDIT_URL: must be an http"},
	} {
		r := runCLI(t, s.url, "", c.env, c.args...).must(t, 2, strings.Join(c.args, " "))
		if !strings.Contains(r.stderr, c.want) || strings.Contains(r.stderr, testSecret) {
			t.Fatalf("%v: stderr %q; want %q", c.args, r.stderr, c.want)
		}
	}
	// The token from a file (PLUGIN_SECRET_FILE), the URL from --url.
	file := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(file, []byte(testSecret+"\n"), 0o600)
	r := runCLI(t, "http://127.0.0.1:1", "", []string{"PLUGIN_INTERNAL_SECRET=", "PLUGIN_SECRET_FILE=" + file}, "stats", "--url", s.url)
	r.must(t, 0, "stats with PLUGIN_SECRET_FILE and --url")
	// A wrong token and a service that is not there are failures (1).
	r = runCLI(t, s.url, "", []string{"PLUGIN_INTERNAL_SECRET=wrong-token-0123456789"}, "stats").must(t, 1, "wrong token")
	if !strings.Contains(r.stderr, "invalid token (401 unauthorized") {
		t.Fatalf("wrong token: %q", r.stderr)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := "http://" + ln.Addr().String()
	ln.Close()
	r = runCLI(t, closed, "", nil, "verify").must(t, 1, "no service")
	if !strings.Contains(r.stderr, "connection refused") {
		t.Fatalf("no service: %q", r.stderr)
	}
	// The offline verify keeps its own usage errors.
	runCLI(t, s.url, "", nil, "verify", "--file", "/nonexistent").must(t, 2, "verify --file of a missing file")
}

// TestCLIExportResume: an export interrupted half-way (the process killed
// while the answer streams) and rerun ends byte for byte like one
// uninterrupted export; so does a file cut at any byte, a torn last line
// included; in NDJSON and CSV, on both stores.
func TestCLIExportResume(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		seedCLI(t, s, "acme", 400)
		dir := t.TempDir()
		acme := []string{"--account", "acme"}
		for _, format := range []string{"ndjson", "csv"} {
			full := "full." + format
			r := runCLI(t, s.url, dir, nil, append([]string{"export", "--output", full}, acme...)...).must(t, 0, "full export "+format)
			var sum exportSummary
			if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil || sum.Written != 400 || sum.LastSeq != 400 || sum.ResumedAfterSeq != 0 {
				t.Fatalf("full export summary: %s %v", r.stdout, err)
			}
			want, err := os.ReadFile(filepath.Join(dir, full))
			if err != nil {
				t.Fatal(err)
			}
			if format == "ndjson" {
				if raw := s.get("/api/v1/events/export", pluginHeaders("acme")).raw; !bytes.Equal(want, raw) {
					t.Fatal("the CLI's export differs from the route's answer")
				}
			} else if !bytes.HasPrefix(want, []byte(csvHeader)) {
				t.Fatalf("CSV export starts with %.200q", want)
			}

			// A file cut at any byte: a line end, inside a line, inside the
			// first line, nothing at all.
			firstEnd := bytes.IndexByte(want, '\n') + 1
			for _, cut := range []int{0, 7, firstEnd, firstEnd + 1, len(want) / 3, len(want) / 2, len(want) - 1, len(want)} {
				part := fmt.Sprintf("cut-%d.%s", cut, format)
				os.WriteFile(filepath.Join(dir, part), want[:cut], 0o600)
				r := runCLI(t, s.url, dir, nil, append([]string{"export", "--output", part}, acme...)...).must(t, 0, "resume "+part)
				got, _ := os.ReadFile(filepath.Join(dir, part))
				if !bytes.Equal(got, want) {
					t.Fatalf("export resumed on a file cut at byte %d of %d differs from the full export (%d bytes); stdout %s",
						cut, len(want), len(got), r.stdout)
				}
			}

			// A real interruption: the answer stalls after a third of the
			// file, the process is killed, and the command is run again.
			target, _ := url.Parse(s.url)
			stall := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/api/v1/events/export" {
					httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
					return
				}
				writeExportPart(w, r, target, 3)
				<-r.Context().Done() // stall until the client is gone
			}))
			part := "killed." + format
			cmd := cliCommand(t, stall.URL, dir, nil, append([]string{"export", "--output", part}, acme...)...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(30 * time.Second); ; {
				if info, err := os.Stat(filepath.Join(dir, part)); err == nil && info.Size() >= int64(len(want)/4) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the export wrote less than a quarter of the file in 30 s")
				}
				time.Sleep(20 * time.Millisecond)
			}
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			stall.Close()
			partial, _ := os.ReadFile(filepath.Join(dir, part))
			if len(partial) >= len(want) || !bytes.HasPrefix(want, partial) {
				t.Fatalf("the killed export left %d bytes, not a prefix of the %d of the full export", len(partial), len(want))
			}
			r = runCLI(t, s.url, dir, nil, append([]string{"export", "--output", part}, acme...)...).must(t, 0, "rerun after kill")
			got, _ := os.ReadFile(filepath.Join(dir, part))
			if !bytes.Equal(got, want) {
				t.Fatalf("export rerun after a kill at %d bytes differs from the full export", len(partial))
			}
			if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil || sum.ResumedAfterSeq == 0 || sum.InFile != 400 || sum.Written != 400-sum.ResumedAfterSeq {
				t.Fatalf("rerun summary: %s", r.stdout)
			}

			// A connection broken during the run: the same run resumes.
			var broken atomic.Bool
			breaker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/api/v1/events/export" || broken.Swap(true) {
					httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
					return
				}
				writeExportPart(w, r, target, 2)
				panic(http.ErrAbortHandler) // the connection drops without the chunked stream's end
			}))
			part = "broken." + format
			r = runCLI(t, breaker.URL, dir, nil, append([]string{"export", "--output", part}, acme...)...).must(t, 0, "export over a broken connection")
			breaker.Close()
			if got := mustRead(t, filepath.Join(dir, part)); !bytes.Equal(got, want) || !strings.Contains(r.stderr, "; continuing after seq ") {
				t.Fatalf("export over a connection broken once: %d bytes of %d; stderr %q", len(got), len(want), r.stderr)
			}
		}

		// A filtered range, and a file of another account is not continued.
		r := runCLI(t, s.url, dir, nil, "export", "--account", "acme", "--output", "range.ndjson", "--from-seq", "11", "--to-seq", "20", "--actor-type", "system").must(t, 0, "range")
		lines := readNDJSON(t, mustRead(t, filepath.Join(dir, "range.ndjson")))
		if len(lines) != 1 || lines[0].Seq != 20 || lines[0].Action != "backup.completed" {
			t.Fatalf("range export with a filter: %+v", lines)
		}
		r = runCLI(t, s.url, dir, nil, "export", "--account", "other", "--output", "full.ndjson").must(t, 1, "another account's file")
		if !strings.Contains(r.stderr, "holds events of account acme, not other") {
			t.Fatalf("another account's file: %q", r.stderr)
		}
		os.WriteFile(filepath.Join(dir, "notes.ndjson"), []byte("my notes\n"), 0o600)
		r = runCLI(t, s.url, dir, nil, "export", "--output", "notes.ndjson").must(t, 1, "a file that is not an export")
		if got := mustRead(t, filepath.Join(dir, "notes.ndjson")); string(got) != "my notes\n" {
			t.Fatalf("a file that is not an export was changed: %q", got)
		}
		// Nothing to export from a new account, and a refused request leaves no file.
		runCLI(t, s.url, dir, nil, "export", "--account", "empty", "--output", "empty.ndjson").must(t, 0, "empty account")
		if got := mustRead(t, filepath.Join(dir, "empty.ndjson")); len(got) != 0 {
			t.Fatalf("empty account: %q", got)
		}
		runCLI(t, s.url, dir, []string{"PLUGIN_INTERNAL_SECRET=wrong-token-0123456789"}, "export", "--output", "refused.ndjson").must(t, 1, "wrong token")
		if _, err := os.Stat(filepath.Join(dir, "refused.ndjson")); err == nil {
			t.Fatal("a refused export left a file")
		}
	})
}

// TestCLIImport: an export imported into another account arrives in order
// with every client field, in a new chain that verifies; an import cut
// short and run again, and a rerun of a complete one, store nothing twice;
// a file with a line that is not an event stores nothing.
func TestCLIImport(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		seedCLI(t, s, "acme", 1200)
		dir := t.TempDir()
		runCLI(t, s.url, dir, nil, "export", "--account", "acme", "--output", "acme.ndjson").must(t, 0, "export")
		all := mustRead(t, filepath.Join(dir, "acme.ndjson"))
		// An import interrupted after its first batch: the first 1000 lines.
		cut := 0
		for range 1000 {
			cut += bytes.IndexByte(all[cut:], '\n') + 1
		}
		os.WriteFile(filepath.Join(dir, "first.ndjson"), all[:cut], 0o600)
		imp := func(file string) importSummary {
			t.Helper()
			r := runCLI(t, s.url, dir, nil, "import", "--account", "copy", "--file", file).must(t, 0, "import "+file)
			var sum importSummary
			if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil {
				t.Fatalf("import summary: %s %v", r.stdout, err)
			}
			return sum
		}
		if sum := imp("first.ndjson"); sum.Events != 1000 || sum.New != 1000 || sum.AlreadyImported != 0 || sum.Batches != 1 {
			t.Fatalf("first part: %+v", sum)
		}
		if sum := imp("acme.ndjson"); sum.Events != 1200 || sum.New != 200 || sum.AlreadyImported != 1000 || sum.Batches != 2 {
			t.Fatalf("whole file after the first part: %+v", sum)
		}
		if sum := imp("acme.ndjson"); sum.New != 0 || sum.AlreadyImported != 1200 {
			t.Fatalf("rerun: %+v", sum)
		}
		runCLI(t, s.url, dir, nil, "export", "--account", "copy", "--output", "copy.ndjson").must(t, 0, "export copy")
		src, dst := readNDJSON(t, all), readNDJSON(t, mustRead(t, filepath.Join(dir, "copy.ndjson")))
		if len(dst) != 1200 {
			t.Fatalf("account copy holds %d events, want 1200", len(dst))
		}
		for i := range src {
			a, b := src[i], dst[i]
			if b.Seq != int64(i+1) || b.SourceAccountID != "copy" || b.ID == a.ID || b.Hash == a.Hash ||
				a.Action != b.Action || a.ActorID != b.ActorID || a.ActorType != b.ActorType || a.ResourceID != b.ResourceID ||
				a.Outcome != b.Outcome || a.Severity != b.Severity || a.UserAgent != b.UserAgent || a.Source != b.Source ||
				!a.OccurredAt.Equal(b.OccurredAt) || !bytes.Equal(a.Metadata, b.Metadata) {
				t.Fatalf("event %d:\nsource %+v\ncopy   %+v", i, a, b)
			}
		}
		runCLI(t, s.url, dir, nil, "verify", "--account", "copy").must(t, 0, "verify copy")
		runCLI(t, s.url, dir, nil, "verify", "--file", "copy.ndjson").must(t, 0, "verify --file copy")

		// A bad line anywhere: nothing is stored, and the line is named.
		bad := append(append([]byte{}, all[:cut]...), []byte(`{"action":"x.y","hash":"00"}`+"\n")...)
		os.WriteFile(filepath.Join(dir, "bad.ndjson"), bad, 0o600)
		r := runCLI(t, s.url, dir, nil, "import", "--account", "bad", "--file", "bad.ndjson").must(t, 1, "bad file")
		if !strings.Contains(r.stderr, "line 1001: not an event") || !strings.Contains(r.stderr, "nothing was imported") {
			t.Fatalf("bad file: %q", r.stderr)
		}
		// A line the service refuses is named by its line number.
		os.WriteFile(filepath.Join(dir, "refused.ndjson"), bytes.Replace(all[:cut], []byte(`"actor_type":"user"`), []byte(`"actor_type":"robot"`), 1), 0o600)
		r = runCLI(t, s.url, dir, nil, "import", "--account", "bad", "--file", "refused.ndjson").must(t, 1, "refused event")
		if !strings.Contains(r.stderr, "line 1: refused: actor_type: must be one of") {
			t.Fatalf("refused event: %q", r.stderr)
		}
		if st := s.get("/api/v1/stats", pluginHeaders("bad")); st.body["total"] != float64(0) {
			t.Fatalf("a refused import stored events: %s", st.raw)
		}
		three := all[:bytes.IndexByte(all, '\n')+1]
		for range 2 {
			three = append(three, all[len(three):len(three)+bytes.IndexByte(all[len(three):], '\n')+1]...)
		}
		os.WriteFile(filepath.Join(dir, "three.ndjson"), three, 0o600)
		r = runCLI(t, s.url, dir, nil, "import", "--account", "copy2", "--file", "three.ndjson", "--table").must(t, 0, "import --table")
		if !strings.HasPrefix(r.stdout, "imported 3 events from three.ndjson into account copy2 in 1 batch(es): 3 new, 0 already") {
			t.Fatalf("import --table: %q", r.stdout)
		}
	})
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// seqsOf returns the seqs of NDJSON events, as "[1 2 3]".
func seqsOf(t *testing.T, ndjson string) string {
	t.Helper()
	var seqs []int64
	for _, e := range readNDJSON(t, []byte(ndjson)) {
		seqs = append(seqs, e.Seq)
	}
	return fmt.Sprint(seqs)
}

// writeExportPart answers r with the first 1/divisor of the service's answer
// at target, headers and all, and flushes it: an export cut short.
func writeExportPart(w http.ResponseWriter, r *http.Request, target *url.URL, divisor int) {
	rec := httptest.NewRecorder()
	httputil.NewSingleHostReverseProxy(target).ServeHTTP(rec, r)
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes()[:rec.Body.Len()/divisor])
	http.NewResponseController(w).Flush()
}
